"""Known-answer tests of the dedup algorithm on the pure (no Ray) path."""
from __future__ import annotations

import random

import pyarrow as pa
import pytest

from curate.dedup import EXACT_DUPLICATE, NEAR_DUPLICATE, deduplicate_table
from curate.dedup.text import RULE_EMPTY, RULE_SHORT, shingles


def words(seed: int, n: int = 300) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(n)]


def edited(tokens: list[str], changes: int, seed: int) -> list[str]:
    """Replace `changes` words spread over the text with new ones."""
    rng = random.Random(seed)
    out = list(tokens)
    for pos in rng.sample(range(len(out)), changes):
        out[pos] = f"zz{rng.randint(0, 10**9)}"
    return out


def jaccard(x: str, y: str) -> float:
    a, b = shingles(x, 5, 3, 0.3)[0], shingles(y, 5, 3, 0.3)[0]
    return len(a & b) / len(a | b)


def table(texts: dict[str, str], **columns) -> pa.Table:
    data = {"id": list(texts), "text": list(texts.values()), **columns}
    return pa.table(data)


def by_id(out: pa.Table) -> dict[str, dict]:
    return {r["id"]: r for r in out.to_pylist()}


def test_exact_duplicates_keep_longest_then_smallest_id():
    base = " ".join(words(1))
    out = by_id(deduplicate_table(table({"d3": base, "d1": base.upper(), "d2": "  " + base + "\n", "x": " ".join(words(2))}), {}))
    # d2 is longest (extra whitespace); the others are exact copies after normalisation.
    assert out["d2"]["drop_reason"] is None and out["d2"]["dup_cluster_size"] == 3
    for d in ("d1", "d3"):
        assert out[d]["drop_reason"] == EXACT_DUPLICATE and out[d]["drop_stage"] == "dedup"
        assert out[d]["duplicate_of"] == "d2" and out[d]["dup_cluster_id"] == "d2"
    assert out["x"]["dup_cluster_id"] == "x" and out["x"]["dup_cluster_size"] == 1 and out["x"]["drop_reason"] is None


def test_near_duplicates_at_known_jaccard():
    base = words(3)
    texts = {"orig": " ".join(base),
             "close": " ".join(edited(base, 2, 1)),  # ~0.94
             "far": " ".join(edited(base, 25, 2))}  # well below 0.8
    assert jaccard(texts["orig"], texts["close"]) > 0.9
    assert jaccard(texts["orig"], texts["far"]) < 0.6
    out = by_id(deduplicate_table(table(texts), {"keep": "first_id"}))
    assert out["orig"]["drop_reason"] == NEAR_DUPLICATE and out["orig"]["duplicate_of"] == "close"
    assert out["close"]["drop_reason"] is None and out["close"]["dup_cluster_size"] == 2
    assert out["far"]["drop_reason"] is None and out["far"]["dup_cluster_size"] == 1


def test_threshold_splits_pairs_just_above_and_below_it():
    # Every replaced word (5+ apart) removes 5 of the ~296 shingles: 5 edits ~0.85, 9 edits ~0.74.
    base = words(8)
    def spaced(changes, seed):
        rng = random.Random(seed)
        out = list(base)
        for pos in rng.sample(range(0, len(base), 6), changes):
            out[pos] = f"zz{rng.randint(0, 10**9)}"
        return " ".join(out)
    texts = {"a-orig": " ".join(base), "b-above": spaced(5, 1), "c-below": spaced(9, 2)}
    assert 0.82 <= jaccard(texts["a-orig"], texts["b-above"]) <= 0.88
    assert 0.70 <= jaccard(texts["a-orig"], texts["c-below"]) <= 0.78
    out = by_id(deduplicate_table(table(texts), {"keep": "first_id", "threshold": 0.8}))
    assert out["b-above"]["duplicate_of"] == "a-orig" and out["b-above"]["drop_reason"] == NEAR_DUPLICATE
    assert out["a-orig"]["drop_reason"] is None and out["a-orig"]["dup_cluster_size"] == 2
    assert out["c-below"]["drop_reason"] is None and out["c-below"]["dup_cluster_size"] == 1


def test_chain_gives_one_cluster_even_when_ends_differ():
    base = words(4, 400)
    a = base
    b = edited(a, 8, 1)
    c = edited(b, 8, 2)
    texts = {"A": " ".join(a), "B": " ".join(b), "C": " ".join(c)}
    assert jaccard(texts["A"], texts["B"]) >= 0.8 and jaccard(texts["B"], texts["C"]) >= 0.8
    assert jaccard(texts["A"], texts["C"]) < 0.8
    out = by_id(deduplicate_table(table(texts), {"keep": "first_id"}))
    assert {r["dup_cluster_id"] for r in out.values()} == {"A"}
    assert [out[k]["drop_reason"] for k in "ABC"] == [None, NEAR_DUPLICATE, NEAR_DUPLICATE]
    assert all(r["dup_cluster_size"] == 3 for r in out.values())


def test_verification_removes_false_candidates():
    # With 1-row bands almost every pair is an LSH candidate; only the check keeps them apart.
    base = words(5)
    texts = {"p": " ".join(base), "q": " ".join(edited(base, 40, 3))}
    assert jaccard(texts["p"], texts["q"]) < 0.5
    loose = {"num_perm": 16, "bands": 16, "rows": 1}
    assert by_id(deduplicate_table(table(texts), {**loose, "verify": True}))["q"]["dup_cluster_size"] == 1
    assert by_id(deduplicate_table(table(texts), {**loose, "verify": False}))["q"]["dup_cluster_size"] == 2


def test_cjk_near_duplicates_use_character_shingles():
    sentence = "近似重复的网页会降低语言模型的训练质量因此需要在预训练语料中去除它们这是数据清洗流程中的关键一步"
    texts = {"zh1": sentence * 3, "zh2": sentence * 3 + "。谢谢", "zh3": "完全不同的内容讲述的是一个关于天气和旅行的故事" * 3}
    out = by_id(deduplicate_table(table(texts), {}))
    assert out["zh1"]["drop_reason"] == NEAR_DUPLICATE and out["zh1"]["duplicate_of"] == "zh2"
    assert out["zh3"]["dup_cluster_size"] == 1


def test_survivor_rules():
    base = " ".join(words(6))
    texts = {"a": base, "b": base + " extra words at the end", "c": base.upper()}
    score = pa.array([0.2, 0.1, 0.9])
    fetched = pa.array([3, 1, 2], pa.int64()).cast(pa.timestamp("s", tz="UTC"))
    t = table(texts, quality=score, fetch_time=fetched)
    keep = {rule: [r["id"] for r in deduplicate_table(t, {"keep": rule}).to_pylist() if r["drop_reason"] is None]
            for rule in ("longest", "earliest", "first_id", "best:quality")}
    assert keep == {"longest": ["b"], "earliest": ["b"], "first_id": ["a"], "best:quality": ["c"]}
    with pytest.raises(ValueError, match="missing_col"):
        deduplicate_table(t, {"keep": "best:missing_col"})


def test_rows_dropped_earlier_pass_through_untouched():
    base = " ".join(words(7))
    t = table({"k": base, "gone": base, "other": "something else entirely here"},
              drop_reason=pa.array([None, "too_short", None], pa.string()),
              drop_stage=pa.array([None, "heuristics", None], pa.string()))
    out = by_id(deduplicate_table(t, {}))
    assert out["gone"]["drop_reason"] == "too_short" and out["gone"]["drop_stage"] == "heuristics"
    assert out["gone"]["dup_cluster_id"] is None
    assert out["k"]["drop_reason"] is None and out["k"]["dup_cluster_size"] == 1  # the dropped copy takes no part
    assert len(out) == 3


def test_empty_and_short_texts_follow_their_rule():
    out = by_id(deduplicate_table(table({"e1": "", "e2": "   ", "s1": "tiny text", "s2": "Tiny  text", "s3": "tiny"}), {}))
    assert out["e1"]["dup_text_rule"] == RULE_EMPTY and out["s3"]["dup_text_rule"] == RULE_SHORT
    # Empty texts are exact copies of each other; short texts dedup exactly (and as one shingle).
    assert sorted(r["drop_reason"] or "kept" for r in out.values()) == [EXACT_DUPLICATE, EXACT_DUPLICATE, "kept", "kept", "kept"]
    assert out["s3"]["drop_reason"] is None


def test_repeated_ids_are_refused_with_the_id():
    with pytest.raises(ValueError, match="'doc-7' occurs more than once"):
        deduplicate_table(pa.table({"id": ["doc-7", "doc-1", "doc-7"], "text": ["a b", "c d", "e f"]}), {})


def test_null_text_is_named():
    with pytest.raises(ValueError, match="'n1' has a null 'text'"):
        deduplicate_table(pa.table({"id": ["n1"], "text": pa.array([None], pa.string())}), {})


def test_exact_url_option():
    t = table({"u1": "first version of a page body text", "u2": "second, different body of the page here"},
              url=["https://Example.com/page/", "https://example.com/page"])
    assert by_id(deduplicate_table(t, {}))["u2"]["drop_reason"] is None
    out = by_id(deduplicate_table(t, {"exact_url": True}))
    assert [out["u1"]["drop_reason"], out["u2"]["drop_reason"]].count("duplicate_url") == 1
