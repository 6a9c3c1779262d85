"""Tokenization with loss masks: a conversation becomes input_ids + labels (-100 = no loss).

Every assistant turn of a conversation is trained in one sequence; its reply and the
stop string after it carry labels, everything else is -100 (unless `train_on_prompt`).
Bad conversations come back as `Drop(reason, detail)` so the caller can count them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from train.templates import Segment, Template, TemplateError

IGNORE_INDEX = -100
ROLES = ("user", "assistant", "tool")


@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    num_turns: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_label_tokens(self) -> int:
        # The first token is never a target (nothing precedes it), so it is not counted.
        return sum(1 for x in self.labels[1:] if x != IGNORE_INDEX)


@dataclass(frozen=True)
class Drop:
    reason: str
    detail: str = ""


@dataclass
class _Turn:
    prompt: list[int] = field(default_factory=list)
    answer: list[int] = field(default_factory=list)


def check_conversation(messages: Any) -> Drop | None:
    """None when `messages` is a well-formed conversation, else the reason it is not.

    Well-formed: user first; user -> assistant; assistant -> user, or -> tool when it
    called tools; tool -> tool or assistant; the last turn is an assistant reply."""
    if not isinstance(messages, (list, tuple)) or not messages:
        return Drop("missing_field", "messages is missing or empty")
    prev = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            return Drop("missing_field", f"turn {i} has no role")
        role = m["role"]
        if role not in ROLES:
            return Drop("unknown_role", f"turn {i} has role {role!r}")
        if m.get("content") is None and not m.get("tool_calls"):
            return Drop("missing_field", f"turn {i} ({role}) has no content")
        if role == "assistant" and not (m.get("content") or "").strip() and not m.get("tool_calls"):
            return Drop("empty_assistant_turn", f"turn {i} is an empty assistant reply")
        allowed = {None: ("user",), "user": ("assistant",), "tool": ("tool", "assistant"),
                   "assistant": ("user", "tool") if m_calls(messages[i - 1]) else ("user",)}[prev]
        if role not in allowed:
            return Drop("not_alternating", f"turn {i} ({role}) follows {prev or 'the start'}")
        prev = role
    if prev != "assistant":
        return Drop("not_alternating", f"conversation ends with a {prev} turn, not an assistant reply")
    return None


def m_calls(m: dict) -> bool:
    return bool(m.get("tool_calls"))


def split_system(messages: Sequence[dict], system: str | None) -> tuple[list[dict], str | None]:
    """Move a leading system message (TRL / OpenAI style) into the system field."""
    messages = list(messages)
    if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system":
        extra = messages[0].get("content") or ""
        system = f"{system}\n{extra}" if system else extra
        messages = messages[1:]
    return messages, system


def encode_segments(segments: Sequence[Segment], tokenizer) -> list[tuple[list[int], bool]]:
    """Token ids of each segment, tokenized one by one so a span boundary is a token boundary."""
    texts = [s.text for s in segments]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [(list(i), s.is_assistant) for i, s in zip(ids, segments)]


def _turns(pieces: list[tuple[list[int], bool]]) -> list[_Turn]:
    """Group into (prompt, answer) turns; prompt text after the last answer is left out,
    as it carries no label and nothing follows it."""
    turns, current = [], _Turn()
    for ids, is_answer in pieces:
        if is_answer:
            current.answer = ids
            turns.append(current)
            current = _Turn()
        else:
            current.prompt = current.prompt + ids
    return turns


def encode_sft(row: dict, tokenizer, template: Template, cutoff_len: int, train_on_prompt: bool = False,
               mask_history: bool = False) -> EncodedExample | Drop:
    """input_ids and labels of one SFT conversation (our `sft` kind: messages, system, tools).

    Truncation keeps whole turns from the start while they fit; the turn that does not fit
    keeps its prompt and as much of its reply as fits. The first prompt is never cut,
    except with `train_on_prompt` (where its tokens carry labels); a conversation whose
    first prompt leaves no room for a reply is dropped as `no_labels_after_cutoff`."""
    if not isinstance(row, dict) or "messages" not in row:
        return Drop("missing_field", "row has no 'messages'")
    messages, system = split_system(row.get("messages") or [], row.get("system"))
    bad = check_conversation(messages)
    if bad is not None:
        return bad
    try:
        segments = template.render(messages, system, row.get("tools"), eos_token=tokenizer.eos_token)
    except TemplateError as exc:
        return Drop(exc.reason, str(exc))
    except (json.JSONDecodeError, TypeError) as exc:
        return Drop("bad_tool_calls", str(exc))
    turns = _turns(encode_segments(segments, tokenizer))
    last = len(turns) - 1
    input_ids: list[int] = []
    labels: list[int] = []
    truncated = False
    budget = cutoff_len
    for k, turn in enumerate(turns):
        prompt, answer = turn.prompt, turn.answer
        if len(prompt) + len(answer) > budget:
            truncated = True
            if len(prompt) < budget:
                answer = answer[: budget - len(prompt)]
            elif k == 0 and train_on_prompt:
                prompt, answer = prompt[:budget], []  # unavoidable: the first prompt alone is too long
            else:
                break
        trained = not mask_history or k == last
        input_ids += prompt + answer
        labels += (prompt if train_on_prompt else [IGNORE_INDEX] * len(prompt))
        labels += answer if trained else [IGNORE_INDEX] * len(answer)
        budget -= len(prompt) + len(answer)
        if truncated:
            break
    example = EncodedExample(input_ids, labels, truncated, num_turns=len(turns))
    if example.num_label_tokens == 0:
        return Drop("no_labels_after_cutoff", f"no trained token left within cutoff_len={cutoff_len}")
    return example


def encode_pretrain(text: Any, tokenizer) -> list[int] | Drop:
    """Token ids of one document followed by EOS (the document separator in packed blocks)."""
    if not isinstance(text, str):
        return Drop("missing_field", "text is missing or not a string")
    if not text.strip():
        return Drop("empty_text", "document is empty")
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def encode_pretrain_batch(texts: Sequence[Any], tokenizer) -> list[list[int] | Drop]:
    """Batched `encode_pretrain` (one fast-tokenizer call for the batch)."""
    good = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    ids = tokenizer([texts[i] for i in good], add_special_tokens=False)["input_ids"] if good else []
    out: list[list[int] | Drop] = [encode_pretrain(t, tokenizer) if not (isinstance(t, str) and t.strip()) else []
                                   for t in texts]
    for i, seq in zip(good, ids):
        out[i] = list(seq) + [tokenizer.eos_token_id]
    return out
