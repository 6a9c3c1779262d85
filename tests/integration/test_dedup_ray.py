"""Dedup on a real local Ray: equal to the no-Ray reference, independent of block layout, and the job."""
from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.dedup import deduplicate, deduplicate_table


def _words(seed: int, n: int = 250) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _edit(tokens: list[str], changes: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = list(tokens)
    for pos in rng.sample(range(len(out)), changes):
        out[pos] = f"zz{rng.randint(0, 10**9)}"
    return out


def corpus() -> pa.Table:
    """Exact copies, near copies, a chain, CJK copies, short/empty texts, unique docs, earlier drops."""
    texts: dict[str, str] = {}
    for c in range(4):  # clusters of an original, a case/space copy and two light edits
        base = _words(100 + c)
        texts[f"c{c}-orig"] = " ".join(base)
        texts[f"c{c}-copy"] = "  " + " ".join(base).upper()
        texts[f"c{c}-near1"] = " ".join(_edit(base, 2, 1))
        texts[f"c{c}-near2"] = " ".join(_edit(base, 3, 2))
    chain = _words(200, 400)
    b = _edit(chain, 8, 3)
    texts.update({"chain-a": " ".join(chain), "chain-b": " ".join(b), "chain-c": " ".join(_edit(b, 8, 4))})
    zh = "近似重复的网页会降低语言模型的训练质量因此需要在预训练语料中去除它们这是数据清洗流程中的关键一步"
    texts.update({"zh-1": zh * 2, "zh-2": zh * 2 + "。好", "zh-3": "今天天气很好我们一起去公园散步然后回家吃饭" * 2})
    texts.update({"e-1": "", "e-2": " ", "s-1": "tiny", "s-2": "TINY"})
    for u in range(12):
        texts[f"u{u:02d}"] = " ".join(_words(300 + u, 120))
    ids = list(texts)
    reasons = [None] * len(ids)
    stages = [None] * len(ids)
    ids.append("gone")  # an exact copy of c0-orig that an earlier stage already dropped
    texts["gone"] = texts["c0-orig"]
    reasons.append("too_short")
    stages.append("heuristics")
    quality = [round(random.Random(i).random(), 3) for i in range(len(ids))]
    return pa.table({"id": ids, "text": [texts[i] for i in ids], "url": [f"https://x.org/{i}" for i in ids],
                     "quality": quality, "drop_reason": pa.array(reasons, pa.string()),
                     "drop_stage": pa.array(stages, pa.string())})


def _sorted_rows(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["id"])


def test_ray_matches_reference_for_any_workers_and_blocks(ray_session):
    table = corpus()
    config = {"keep": "best:quality"}
    expected = _sorted_rows(deduplicate_table(table, config).to_pylist())
    results = []
    # One worker on one block, then two workers on five blocks and three per shuffle: same output.
    for workers, blocks, parts in ((1, 1, 1), (2, 5, 3)):
        ds = ray_session.data.from_items(table.to_pylist(), override_num_blocks=blocks)
        ds.context.execution_options.resource_limits = ray_session.data.ExecutionResources(cpu=workers)
        out = deduplicate(ds, {**config, "shuffle_blocks": parts}).materialize()
        assert out.num_blocks() <= parts  # unions of co-groups must not multiply the blocks
        results.append(_sorted_rows(out.take_all()))
    assert results[0] == results[1] == expected
    rows = {r["id"]: r for r in results[0]}
    assert len(rows) == table.num_rows  # nothing lost
    assert rows["gone"]["drop_reason"] == "too_short" and rows["gone"]["dup_cluster_id"] is None
    for c in range(4):
        members = [r for r in rows.values() if r["id"].startswith(f"c{c}-")]
        assert {r["dup_cluster_size"] for r in members} == {4} and len({r["dup_cluster_id"] for r in members}) == 1
        assert sum(r["drop_reason"] is None for r in members) == 1
    assert {rows[k]["dup_cluster_id"] for k in ("chain-a", "chain-b", "chain-c")} == {rows["chain-a"]["dup_cluster_id"]}
    assert rows["zh-1"]["dup_cluster_id"] == rows["zh-2"]["dup_cluster_id"] != rows["zh-3"]["dup_cluster_id"]
    assert all(rows[f"u{u:02d}"]["dup_cluster_size"] == 1 for u in range(12))


def test_repeated_ids_are_refused(ray_session):
    ds = ray_session.data.from_items([{"id": "x1", "text": "a b c"}, {"id": "dup-9", "text": "d e f"},
                                      {"id": "dup-9", "text": "g h i"}], override_num_blocks=2)
    with pytest.raises(ValueError, match="'dup-9' occurs more than once"):
        deduplicate(ds, {})


def test_job_writes_kept_dropped_accounting(ray_session, tmp_path):
    from jobs.dedup import main

    table = corpus()
    (tmp_path / "in" / "data").mkdir(parents=True)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), tmp_path / "in" / "data" / "part-0.parquet")
    pq.write_table(table.slice(half), tmp_path / "in" / "data" / "part-1.parquet")
    summary = main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "keep=first_id",
                    "dedup.threshold=0.8"])
    out = tmp_path / "out"
    assert (out / "_SUCCESS").exists()
    kept = pq.read_table(out / "data").to_pylist()
    dropped = pq.read_table(out / "dropped").to_pylist()
    assert len(kept) + len(dropped) == table.num_rows == summary["rows_in"]
    assert sorted(r["id"] for r in kept + dropped) == sorted(table.column("id").to_pylist())
    assert all(r["drop_reason"] is None and r["dup_cluster_id"] for r in kept)
    dedup_drops = [r for r in dropped if r["drop_stage"] == "dedup"]
    kept_ids = {r["id"] for r in kept}
    assert dedup_drops and all(r["duplicate_of"] in kept_ids for r in dedup_drops)
    accounting = json.loads((out / "accounting.json").read_text())
    stages = {s["stage"]: s for s in accounting["stages"]}
    assert stages["input"]["dropped"] == {"too_short": 1}
    assert stages["dedup"]["kept"] == len(kept)
    assert sum(stages["dedup"]["dropped"].values()) == len(dedup_drops)
    assert accounting["run"]["text_rules"] == {"empty_text_exact_only": 2, "short_text_one_shingle": 2}
    assert accounting["run"]["started"] <= accounting["run"]["finished"]
