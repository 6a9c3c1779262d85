"""Judge win rate: both orders asked, ties where they disagree, invalid answers left out, per
category. The judge here is a rule-based synth Backend (no model), so outcomes are known."""
from __future__ import annotations

import json
import re

import pytest

from synth.backends import Backend, Completion
from synth.judge import Judge
from synth.judge_eval import JudgeEvalOptions, judge_prompts, load_categorised_prompts, tally

PAIR = re.compile(r"\[Answer A\]\n(.*)\n\n\[Answer B\]\n(.*)\n\nReply", re.S)
POINT = re.compile(r"\[Answer\]\n(.*)\n\nGive a grade", re.S)


class RuleJudge(Backend):
    """Prefers the longer answer; on prompts containing "biased" it always says A (position bias)."""

    kind = "rule"
    identity = "rule-judge"

    def generate(self, requests, params):
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            if (m := PAIR.search(text)):
                a, b = m.groups()
                verdict = "A" if "biased" in text or len(a) >= len(b) else "B"
            elif (m := POINT.search(text)):
                verdict = f"Score: {min(10, len(m.group(1).split()))}"
            else:
                verdict = "???"
            out.append(Completion(r.request_id, 0, verdict, "stop"))
        return out


def _prompts(tmp_path):
    rows = [{"prompt": f"Write about topic {i}.", "category": "writing"} for i in range(3)]
    rows += [{"prompt": f"biased question {i}", "category": "math"} for i in range(2)]
    rows += [{"prompt": "Write a haiku.", "category": "writing"}, {"prompt": "No category here."}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_two_order_outcomes_win_rate_and_categories(tmp_path):
    options = JudgeEvalOptions(data=[str(_prompts(tmp_path))])
    prompts = load_categorised_prompts(options)
    assert [c for _, c in prompts] == ["writing"] * 3 + ["math"] * 2 + ["writing", "all"]
    ids = [p.id for p, _ in prompts]
    answers_a = {i: ("a long and careful answer of eight words", None) for i in ids}
    answers_b = {i: ("short one", None) for i in ids}
    answers_b[ids[5]] = ("a much longer answer from model b that wins here", None)  # the haiku: B is longer
    answers_a[ids[6]] = (None, "HTTP 500")                                            # A failed: invalid

    rows = judge_prompts(Judge(RuleJudge()), prompts, answers_a, answers_b, scores=True)
    assert [r["outcome"] for r in rows] == ["a", "a", "a", "tie", "tie", "b", "invalid"]
    assert rows[6]["reason"] == "HTTP 500" and rows[6]["score_a"] is None
    assert rows[0]["score_a"] == 8 and rows[0]["score_b"] == 2

    metrics = tally(rows)
    assert (metrics["wins_a"], metrics["wins_b"], metrics["ties"], metrics["invalid"]) == (3, 1, 2, 1)
    assert metrics["win_rate_a"] == pytest.approx((3 + 2 / 2) / 6)
    writing, math = metrics["per_category"]["writing"], metrics["per_category"]["math"]
    assert writing["win_rate_a"] == pytest.approx(3 / 4) and math["win_rate_a"] == pytest.approx(0.5)
    assert math["ties"] == 2 and math["mean_score_a"] == 8 and math["mean_score_b"] == 2
    assert metrics["per_category"]["all"]["win_rate_a"] is None  # nothing decided there


def test_unparseable_verdicts_are_invalid_not_ties(tmp_path):
    class Mute(RuleJudge):
        def generate(self, requests, params):
            return [Completion(r.request_id, 0, "I cannot decide.", "stop") for r in requests]

    options = JudgeEvalOptions(data=[str(_prompts(tmp_path))], max_prompts=2)
    prompts = load_categorised_prompts(options)
    answers = {p.id: ("x", None) for p, _ in prompts}
    rows = judge_prompts(Judge(Mute()), prompts, answers, answers, scores=False)
    assert [(r["outcome"], r["reason"]) for r in rows] == [("invalid", "unparseable")] * 2
    assert tally(rows)["win_rate_a"] is None


def test_bad_options_fail_with_one_line():
    with pytest.raises(ValueError, match="sampling: unknown option"):
        JudgeEvalOptions(data=["p.jsonl"], sampling={"temprature": 0})
    with pytest.raises(ValueError, match="no prompt set"):
        JudgeEvalOptions()
