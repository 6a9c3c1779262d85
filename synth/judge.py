"""An LLM as judge: pointwise scores for ranking samples, pairwise checks in both orders.

Pairwise judges favour a position; asking A-vs-B and then B-vs-A and keeping a pair only
when both answers name the same response removes the pairs that position bias decided.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from synth.backends import Backend, ChatRequest, SamplingParams
from synth.prompts import ParseError

POINTWISE = (
    "You are grading an AI assistant's answer. Judge how helpful, correct and clear it is for the request.\n\n"
    "[Request]\n{prompt}\n\n[Answer]\n{response}\n\n"
    "Give a grade from 1 (useless) to 10 (excellent). Reply in the form 'Score: N'."
)
PAIRWISE = (
    "Two AI assistants answered the same request. Decide which answer is more helpful, correct and clear.\n\n"
    "[Request]\n{prompt}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}\n\n"
    "Reply with a single letter: A or B."
)

_SCORE = re.compile(r"(?:score|grade|rating|评分|分数)\s*[:：=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"^\D{0,3}(\d+(?:\.\d+)?)")
_CHOICE = re.compile(r"^\W*(?:answer|response)?\s*\[*\(?([AB])\b", re.IGNORECASE)


def parse_score(text: str, low: float = 1, high: float = 10) -> float:
    m = _SCORE.search(text) or _NUMBER.match(text.strip())
    if not m:
        raise ParseError("no score found")
    value = float(m.group(1))
    if not low <= value <= high:
        raise ParseError(f"score {value} outside {low}..{high}")
    return value


def parse_choice(text: str) -> str:
    m = _CHOICE.match(text.strip())
    if not m:
        raise ParseError("answer is neither A nor B")
    return m.group(1).upper()


def render_conversation(messages: list[dict]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


@dataclass
class PairVerdict:
    keep: bool
    reason: str | None          # drop reason when not kept
    raw: str                    # both raw answers, for the dropped output


class Judge:
    def __init__(self, backend: Backend, sampling: dict | None = None, seed: int = 0):
        self.backend = backend
        self.params = SamplingParams.from_config({"temperature": 0.0, "max_tokens": 16, "seed": seed, **(sampling or {})})

    @property
    def identity(self) -> str:
        return f"judge:{self.backend.identity}"

    def score(self, items: list[tuple[str, list[dict], str]]) -> list[tuple[float | None, str | None, str]]:
        """(key, prompt messages, response) -> (score or None, drop reason, raw answer) per item."""
        requests = [ChatRequest(key, [{"role": "user", "content": POINTWISE.format(
            prompt=render_conversation(msgs), response=resp)}]) for key, msgs, resp in items]
        out = []
        for c in self.backend.generate(requests, self.params) if requests else []:
            if c.error:
                out.append((None, "http_error", c.error))
                continue
            try:
                out.append((parse_score(c.text), None, c.text))
            except ParseError:
                out.append((None, "unparseable", c.text))
        return out

    def verify_pairs(self, pairs: list[tuple[str, list[dict], str, str]]) -> list[PairVerdict]:
        """(key, prompt, chosen, rejected): keep a pair when A-first and B-first both prefer `chosen`."""
        requests = []
        for key, msgs, chosen, rejected in pairs:
            p = render_conversation(msgs)
            requests.append(ChatRequest(f"{key}|ab", [{"role": "user", "content": PAIRWISE.format(prompt=p, a=chosen, b=rejected)}]))
            requests.append(ChatRequest(f"{key}|ba", [{"role": "user", "content": PAIRWISE.format(prompt=p, a=rejected, b=chosen)}]))
        answers = {c.request_id: c for c in (self.backend.generate(requests, self.params) if requests else [])}
        verdicts = []
        for key, *_ in pairs:
            ab, ba = answers[f"{key}|ab"], answers[f"{key}|ba"]
            raw = f"[chosen as A] {ab.error or ab.text}\n[chosen as B] {ba.error or ba.text}"
            if ab.error or ba.error:
                verdicts.append(PairVerdict(False, "http_error", raw))
                continue
            try:
                first, second = parse_choice(ab.text), parse_choice(ba.text)
            except ParseError:
                verdicts.append(PairVerdict(False, "unparseable", raw))
                continue
            if first == "A" and second == "B":
                verdicts.append(PairVerdict(True, None, raw))
            elif first == "B" and second == "A":
                verdicts.append(PairVerdict(False, "judge_prefers_rejected", raw))
            else:
                verdicts.append(PairVerdict(False, "judge_orders_disagree", raw))
        return verdicts
