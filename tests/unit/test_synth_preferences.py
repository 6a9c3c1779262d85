"""Pair building, the both-orders judge check and best-of-N, with rule-based backends (no Ray).

The backends here implement the real `Backend` interface with fixed rules, so every
expected pair and drop follows from the rules rather than from a model's mood.
"""
from __future__ import annotations

import re

import pytest

from synth.backends import Backend, Completion
from synth.best_of_n import BestOfNConfig, best_of_n
from synth.judge import Judge, parse_choice, parse_score
from synth.preferences import PreferenceConfig, build_preferences
from synth.prompt_sources import Prompt
from synth.prompts import ParseError


class RulePolicy(Backend):
    """Sample i of a prompt answers with i+1 words; `broken` prompt ids fail; `same` ids answer alike."""

    def __init__(self, broken=(), same=(), truncate=()):
        self.broken, self.same, self.truncate = set(broken), set(same), set(truncate)
        self.calls = 0

    identity = "rule:policy"

    def generate(self, requests, params):
        self.calls += 1
        out = []
        for r in requests:
            pid = r.request_id.split("@")[0]
            for i in range(params.n):
                if pid in self.broken:
                    out.append(Completion(r.request_id, i, "", "error", error="HTTP 503 after 3 retries"))
                    continue
                words = 3 if pid in self.same else i + 1 + (params.seed % 3)
                reason = "length" if pid in self.truncate and i == 0 else "stop"
                out.append(Completion(r.request_id, i, " ".join(["word"] * words), reason))
        return out


class RuleJudge(Backend):
    """Scores = number of words (capped at 10); prefers the longer answer; `bias` answers A always."""

    def __init__(self, bias=False, garble=False):
        self.bias, self.garble = bias, garble

    identity = "rule:judge"

    def generate(self, requests, params):
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            if self.garble:
                answer = "I think both are fine."
            elif "[Answer A]" in text:
                a = re.search(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]", text, re.S).group(1)
                b = re.search(r"\[Answer B\]\n(.*?)\n\nReply", text, re.S).group(1)
                answer = "A" if self.bias or len(a.split()) > len(b.split()) else "B"
            else:
                resp = re.search(r"\[Answer\]\n(.*?)\n\nGive", text, re.S).group(1)
                answer = f"Score: {min(10, len(resp.split()))}"
            out.append(Completion(r.request_id, 0, answer, "stop"))
        return out


PROMPTS = [Prompt(f"q{i}", [{"role": "user", "content": f"Question {i}?"}]) for i in range(5)]


def check_funnel(stages):
    for s in stages:
        s.check()


def test_best_vs_worst_with_judge_keeps_consistent_pairs():
    policy = RulePolicy(broken={"q1"}, same={"q2"})
    rows, dropped, stages, run = build_preferences(PROMPTS, policy, Judge(RuleJudge()), PreferenceConfig(n=4))
    check_funnel(stages)
    assert sorted(r["prompt_id"] for r in rows) == ["q0", "q3", "q4"]
    for r in rows:
        assert r["chosen"] == "word " * 3 + "word" and r["rejected"] == "word"
        assert r["margin"] == r["chosen_score"] - r["rejected_score"] == 3.0
        assert r["judge"] == "judge:rule:judge"
    reasons = {(d["drop_stage"], d["drop_reason"]) for d in dropped}
    assert ("sample", "http_error") in reasons and ("pair", "fewer_than_two_samples") in reasons
    assert ("pair", "tie") in reasons
    assert run["http_errors"] == 4


def test_position_biased_judge_loses_every_pair():
    rows, dropped, stages, _ = build_preferences(PROMPTS, RulePolicy(), Judge(RuleJudge(bias=True)), PreferenceConfig(n=3))
    check_funnel(stages)
    assert rows == []
    judged = [d for d in dropped if d["drop_stage"] == "judge_both_orders"]
    assert len(judged) == 5 and {d["drop_reason"] for d in judged} == {"judge_orders_disagree"}
    assert "[chosen as A] A" in judged[0]["raw_text"]


def test_unparseable_judge_answers_are_counted_with_raw_text():
    rows, dropped, stages, _ = build_preferences(PROMPTS[:2], RulePolicy(), Judge(RuleJudge(garble=True)),
                                                 PreferenceConfig(n=2))
    check_funnel(stages)
    assert rows == []
    score_stage = next(s for s in stages if s.stage == "score")
    assert score_stage.dropped == {"unparseable": 4}
    assert all(d["raw_text"] == "I think both are fine." for d in dropped if d["drop_stage"] == "score")


def test_margin_and_best_vs_random():
    cfg = PreferenceConfig(n=4, min_margin=3.5)
    rows, dropped, stages, _ = build_preferences(PROMPTS, RulePolicy(), Judge(RuleJudge()), cfg)
    assert rows == [] and {d["drop_reason"] for d in dropped} == {"below_margin"}
    rows, _, stages, _ = build_preferences(PROMPTS, RulePolicy(), Judge(RuleJudge()),
                                           PreferenceConfig(n=4, pairing="best_vs_random", seed=3))
    check_funnel(stages)
    assert len(rows) == 5 and all(r["chosen_score"] == 4 and 1 <= r["rejected_score"] < 4 for r in rows)
    with pytest.raises(ValueError, match="n >= 2"):
        PreferenceConfig(n=1)


def test_best_of_n_accumulates_across_rounds_and_runs():
    policy = RulePolicy(truncate={"q0"})
    cfg = BestOfNConfig(n=2, rounds=3, seed=1)
    rows, dropped, stages, run = best_of_n(PROMPTS, policy, Judge(RuleJudge()), cfg)
    check_funnel(stages)
    assert policy.calls == 3 and len(rows) == 5
    # The best over 3 rounds is at least as good as the best of any single round.
    single, _, _, _ = best_of_n(PROMPTS, RulePolicy(), Judge(RuleJudge()), BestOfNConfig(n=2, rounds=1, seed=1))
    by_id = {r["prompt_id"]: r for r in rows}
    for r in single:
        assert by_id[r["prompt_id"]]["score"] >= r["score"]
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    # A previous run's better answer survives a weaker new round.
    previous = {"q3": {**by_id["q3"], "score": 99.0, "round": 0}}
    again, _, stages, _ = best_of_n(PROMPTS, RulePolicy(), Judge(RuleJudge()), BestOfNConfig(n=2), previous)
    check_funnel(stages)
    assert next(r for r in again if r["prompt_id"] == "q3")["score"] == 99.0


def test_judge_parsers():
    assert parse_score("Score: 7") == 7 and parse_score("评分：8.5") == 8.5 and parse_score("9/10") == 9
    assert parse_choice("B") == "B" and parse_choice("Answer A is better") == "A" and parse_choice("[[B]]") == "B"
    for bad in ("Score: 42", "no idea"):
        with pytest.raises(ParseError):
            parse_score(bad)
    with pytest.raises(ParseError):
        parse_choice("Both")
