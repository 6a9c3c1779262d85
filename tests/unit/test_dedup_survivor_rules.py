"""Dedup never loses a cluster: survivors are chosen among rows that pass the rules."""
from __future__ import annotations

import pyarrow as pa

from curate.dedup import deduplicate_table
from curate.registry import STAGE_ORDER
from curate.rules import RuleFilterStage

BASE = "the river town opened a new bridge after years of planning and the people came to see it " * 4
RULES = [{"name": "no_lottery", "expr": "not has_lottery"}]


def _cluster() -> pa.Table:
    # b is the longest member (the default survivor) but carries spam: a rule drops it.
    texts = [BASE + "tail a", BASE + "tail b lottery win", BASE + "tail c more"]
    return pa.table({"id": ["a", "b", "c"], "text": texts, "has_lottery": [False, True, False]})


def test_rules_run_before_dedup_in_the_registry():
    assert STAGE_ORDER.index("filter") < STAGE_ORDER.index("dedup")


def test_cluster_whose_best_member_fails_a_rule_keeps_a_survivor():
    config = {"threshold": 0.7, "keep": "longest"}
    # The old order: dedup picks b, then the rule drops it -- the whole cluster is gone.
    old = RuleFilterStage(RULES)(deduplicate_table(_cluster(), config))
    assert old.column("drop_reason").null_count == 0
    # The pipeline's order: the rule first, then dedup among the rows that pass it.
    new = deduplicate_table(RuleFilterStage(RULES)(_cluster()), config)
    rows = {r["id"]: r for r in new.to_pylist()}
    assert rows["b"]["drop_reason"] == "no_lottery" and rows["b"]["dup_cluster_id"] is None
    assert rows["c"]["drop_reason"] is None  # the longest member that passes the rules survives
    assert rows["a"]["drop_reason"] == "near_duplicate" and rows["a"]["duplicate_of"] == "c"
    assert rows["c"]["dup_cluster_size"] == 2
