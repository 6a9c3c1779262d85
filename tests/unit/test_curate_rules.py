"""The declarative rule set: safe parsing, vectorised evaluation, null semantics, config errors."""
from __future__ import annotations

import pyarrow as pa
import pytest

from curate.config import CurateConfigError, STAGE_ORDER, merge_config, parse_config
from curate.heuristics import DEFAULT_THRESHOLDS, LABEL_TYPES
from curate.rules import RuleError, RuleFilterStage, RuleSet, parse_rule

T = DEFAULT_THRESHOLDS.as_dict()


def table():
    return pa.table({
        "id": ["a", "b", "c", "d", "e"],
        "lang": ["en", "zh", None, "fr", "ja"],
        "lang_score": [0.9, 0.7, 0.99, 0.9, 0.5],
        "gopher_word_count": [100, 20, 100, 100, 80],
        "gopher_mean_word_length": [4.0, None, 2.0, 5.0, None],
        "c4_lorem_ipsum": [False, False, False, True, False],
    })


RULES = [
    {"name": "lang_kept", "expr": "lang in ['en', 'zh', 'ja'] and lang_score >= 0.65"},
    {"name": "gopher_min_words", "expr": "gopher_word_count >= t.gopher_min_words"},
    {"name": "mean_word_length", "expr": "gopher_mean_word_length is None or "
                                         "t.gopher_min_mean_word_length <= gopher_mean_word_length <= t.gopher_max_mean_word_length"},
    {"name": "no_lorem", "expr": "not c4_lorem_ipsum"},
]


def test_first_failing_rule_names_the_drop():
    out = RuleFilterStage(RULES, T)(table()).to_pylist()
    reasons = {r["id"]: r["drop_reason"] for r in out}
    # a passes; b has 20 words; c's null lang makes lang_kept null -> fails; d is French (first rule),
    # e's score 0.5 fails lang_kept.
    assert reasons == {"a": None, "b": "gopher_min_words", "c": "lang_kept", "d": "lang_kept", "e": "lang_kept"}
    assert {r["drop_stage"] for r in out if r["drop_reason"]} == {"filter"}


def test_null_label_fails_unless_the_rule_allows_it():
    t = pa.table({"x": pa.array([None, 1.0, 5.0], pa.float64())})
    assert RuleSet([{"name": "r", "expr": "x >= 3"}]).failing_rule(t).to_pylist() == ["r", "r", None]
    assert RuleSet([{"name": "r", "expr": "x is None or x >= 3"}]).failing_rule(t).to_pylist() == [None, "r", None]
    assert RuleSet([{"name": "r", "expr": "x is not None"}]).failing_rule(t).to_pylist() == ["r", None, None]
    # Kleene: null or true is true; not null is null -> fails
    assert RuleSet([{"name": "r", "expr": "not (x > 2)"}]).failing_rule(t).to_pylist() == ["r", None, "r"]


def test_arithmetic_membership_and_chains():
    t = pa.table({"a": [1, 2, 3], "b": [2, 2, 2], "s": ["x", "y", "z"]})
    fails = RuleSet([{"name": "ratio", "expr": "a / b < 1.2"}, {"name": "member", "expr": "s not in ('z',)"},
                     {"name": "chain", "expr": "0 < a <= 2 < b + 1"}]).failing_rule(t).to_pylist()
    assert fails == [None, None, "ratio"]  # 3 / 2 = 1.5: a true division
    assert RuleSet([{"name": "neg", "expr": "a > -1 and s in ['x', 'y']"}]).failing_rule(t).to_pylist() == [None, None, "neg"]


def test_rows_dropped_earlier_keep_their_first_reason():
    from curate.stage import mark_drops

    t = mark_drops(table(), [False, True, False, False, False], "url_blocklist:x", "url_filter")
    out = RuleFilterStage(RULES, T)(t).to_pylist()
    b = next(r for r in out if r["id"] == "b")
    assert (b["drop_reason"], b["drop_stage"]) == ("url_blocklist:x", "url_filter")


@pytest.mark.parametrize("expr, message", [
    ("__import__('os').system('true')", "Call"),
    ("x.y > 1", "attribute access"),
    ("t.nope > 1", "unknown threshold t.nope"),
    ("lambda: 1", "Lambda"),
    ("x[0] > 1", "Subscript"),
    ("x in y", "list of literals"),
    ("x is 3", "only compare with None"),
    ("1 +", "cannot parse"),
    ("", "non-empty"),
])
def test_unsafe_or_bad_expressions_are_refused_with_the_rule_name(expr, message):
    with pytest.raises(RuleError, match=message) as info:
        parse_rule("my_rule", expr, T)
    assert "my_rule" in str(info.value) or "non-empty" in message


def test_evaluation_errors_name_rule_and_column():
    with pytest.raises(RuleError, match=r"rule 'r'.*unknown column 'nope'"):
        RuleSet([{"name": "r", "expr": "nope > 1"}]).failing_rule(table())
    with pytest.raises(RuleError, match=r"rule 'r'.*cannot evaluate"):
        RuleSet([{"name": "r", "expr": "lang_score >= 'high'"}]).failing_rule(table())
    with pytest.raises(RuleError, match="not a condition"):
        RuleSet([{"name": "r", "expr": "lang"}]).failing_rule(table())
    with pytest.raises(RuleError, match="used twice"):
        RuleSet([{"name": "r", "expr": "1 < 2"}, {"name": "r", "expr": "2 < 3"}])
    with pytest.raises(RuleError, match=r"rule 'r': unknown column 'zzz'"):
        RuleSet([{"name": "r", "expr": "zzz > 1"}]).check_columns({"a", "b"})


def test_default_config_rules_parse_and_use_known_columns():
    config = parse_config(merge_config())
    rule_set = RuleSet(config.rules, config.thresholds)
    produced = set(LABEL_TYPES) | {"lang", "lang_score", "sensitive_count", "sensitive_ratio"}
    rule_set.check_columns(produced)
    assert len(rule_set.rules) >= 20
    # the perplexity rule is only active when the quality stage is enabled
    assert "perplexity" not in {r.name for r in rule_set.rules}
    with_quality = parse_config(merge_config({"quality": {"enabled": True, "model_path": "x"}}))
    assert "perplexity" in {r["name"] for r in with_quality.rules}


def test_config_errors_name_the_key():
    with pytest.raises(CurateConfigError, match="unknown option .bogus."):
        parse_config(merge_config({"bogus": 1}))
    with pytest.raises(CurateConfigError, match="heuristics.enabled"):
        parse_config(merge_config({"heuristics": {"enabled": "yes"}}))
    with pytest.raises(CurateConfigError, match="thresholds.gopher_min_words"):
        parse_config(merge_config({"thresholds": {"gopher_min_words": "fifty"}}))
    with pytest.raises(CurateConfigError, match="runtime.workers"):
        parse_config(merge_config({"runtime": {"workers": 0}}))
    with pytest.raises(CurateConfigError, match="runtime.inflight_mb_per_worker"):
        parse_config(merge_config({"runtime": {"inflight_mb_per_worker": "lots"}}))
    assert parse_config(merge_config({"runtime": {"inflight_mb_per_worker": None}})).runtime.inflight_mb_per_worker is None
    config = parse_config(merge_config({"dedup": {"enabled": False}, "thresholds": {"gopher_min_words": 10}}))
    assert not config.enabled("dedup") and config.thresholds["gopher_min_words"] == 10
    assert [s for s in STAGE_ORDER if config.enabled(s)][0] == "url_filter"
