"""ppl_bucket cutoffs: computed lazily at execution time, recorded in the run's accounting."""
from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from curate.ppl_buckets import (
    CutoffRecorder,
    assign_buckets,
    bucket_dataset,
    compute_cutoffs,
    recorded_cutoffs,
)

# Stages before ppl_bucket in the pipeline order: a row they dropped never reached the buckets.
BEFORE_BUCKETS = {"url_filter", "extract", "langid", "heuristics", "clean_lines", "pii", "sensitive", "perplexity",
                  "quality", "topic"}


def _pairs(n: int, seed: int) -> tuple[list[str | None], list[float]]:
    rng = random.Random(seed)
    langs = [rng.choice(["en", "en", "de", "fr", None]) for _ in range(n)]
    return langs, [round(rng.uniform(5.0, 5000.0), 3) for _ in range(n)]


def test_recorder_counts_a_retried_batch_once_and_freezes():
    recorder = CutoffRecorder()
    recorder.open("b", [30.0, 60.0], 5)
    langs, values = _pairs(60, 1)
    recorder.report("b", "first", langs[:30], values[:30])
    recorder.report("b", "first", langs[:30], values[:30])  # a retried task sends its batch again
    recorder.report("b", "second", langs[30:], values[30:])
    entry = recorder.cutoffs("b")
    assert entry["cutoffs"] == compute_cutoffs(langs, values, (30.0, 60.0), 5)
    assert entry["documents"] == 60 and sum(entry["documents_per_lang"].values()) == 60
    recorder.report("b", "third", ["en"], [1e9])  # a second execution: the labels keep the first cutoffs
    assert recorder.record("b") == entry and recorder.record("unknown") is None


def test_lazy_cutoffs_equal_the_computed_ones(ray_session):
    import ray

    langs, values = _pairs(300, 2)
    table = pa.table({"id": [f"d{i}" for i in range(300)], "lang": langs, "ppl": values,
                      "drop_reason": [("too_short" if i % 10 == 0 else None) for i in range(300)]})
    ds = bucket_dataset(ray.data.from_arrow(table).repartition(6), {"min_docs_per_lang": 20}, task_cpus=0.25)
    names = []
    op = ds._logical_plan.dag
    while op is not None:  # nothing ran while the plan was built: every operator is still in it
        names.append(op.name)
        op = op.input_dependencies[0] if op.input_dependencies else None
    assert any("RandomizeBlockOrder" in n for n in names) and any("_report_scored" in n for n in names), names
    rows = ds.take_all()
    active = [i for i in range(300) if i % 10]
    expected = compute_cutoffs([langs[i] for i in active], [values[i] for i in active], (30.0, 60.0), 20)
    entry = recorded_cutoffs(ds)
    assert entry["source"] == "run" and entry["cutoffs"] == expected and entry["documents"] == len(active)
    labelled = assign_buckets(table, expected).column("ppl_bucket").to_pylist()
    by_id = {r["id"]: r["ppl_bucket"] for r in rows}
    assert all(by_id[f"d{i}"] == (labelled[i] if i % 10 else None) for i in range(300))

    supplied = {"en": [10.0, 100.0], "*": [50.0, 500.0]}
    ds = bucket_dataset(ray.data.from_arrow(table), {"cutoffs": supplied})
    ds.take_all()
    assert recorded_cutoffs(ds) == {"source": "supplied", "cutoffs": supplied}
    assert recorded_cutoffs(ray.data.from_arrow(table)) is None  # no bucket stage, no entry


def test_run_accounting_records_the_cutoffs_used(tmp_path, ray_session):
    from curate.config import merge_config, parse_config
    from curate.pipeline import run_curate
    from curate.sample_crawl import paragraphs
    from schemas.funnel import read_accounting

    rng = random.Random(9)
    docs = [{"id": f"{lang}-{i}", "text": "\n\n".join(paragraphs(rng, lang, 4))}
            for lang, n in (("en", 14), ("de", 8), ("fr", 3)) for i in range(n)]
    docs.append({"id": "en-copy", "text": docs[0]["text"]})  # dedup (after the buckets) drops it
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    config = parse_config(merge_config({"ppl_bucket": {"enabled": True, "min_docs_per_lang": 6}}))
    run_curate(config, [str(source)], tmp_path / "out", write_card=False)

    _, run = read_accounting(tmp_path / "out")
    rows = pads.dataset(str(tmp_path / "out" / "data"), format="parquet").to_table().to_pylist()
    dropped = tmp_path / "out" / "dropped"
    if list(dropped.glob("*.parquet")):
        rows += pads.dataset(str(dropped), format="parquet").to_table().to_pylist()
    reached = [r for r in rows if r["drop_stage"] not in BEFORE_BUCKETS and r["ppl"] is not None]
    assert any(r["drop_stage"] == "dedup" for r in reached)  # rows dropped after the buckets count too
    expected = compute_cutoffs([r["lang"] for r in reached], [r["ppl"] for r in reached], (30.0, 60.0), 6)
    recorded = run["ppl_bucket"]
    assert recorded["source"] == "run" and recorded["percentiles"] == [30.0, 60.0]
    assert recorded["cutoffs"] == expected  # the same multiset of values: the same floats
    assert recorded["documents"] == len(reached)
    assert {"en", "de", "*"} <= set(expected)  # fr has too few documents: the pooled pair applies
    for r in reached:
        pair = recorded["cutoffs"].get(r["lang"], recorded["cutoffs"]["*"])
        assert r["ppl_bucket"] == ("head" if r["ppl"] <= pair[0] else "middle" if r["ppl"] <= pair[1] else "tail")


def test_plan_with_buckets_stays_lazy_and_fits_small_clusters(tmp_path, ray_session):
    # As tests/integration/test_curate_pipeline.py test_plan_fits_small_clusters, with the
    # ppl_bucket stage on: building the plan runs nothing (the model actors are still in it)
    # and the barrier asks for the same fraction of a CPU as the other operators.
    from curate.config import merge_config, parse_config
    from curate.pipeline import build_dataset
    from curate.sample_crawl import WarcRecord, write_warc

    html = b"<html><body><article><p>" + b"A sentence with words. " * 20 + b"</p></article></body></html>"
    crawl = write_warc(tmp_path / "c.warc", [WarcRecord(f"https://a.example/{i}", html) for i in range(3)])
    base = {"dedup": {"enabled": False}, "filter": {"enabled": False}, "ppl_bucket": {"enabled": True}}
    for workers in (1, 2):
        ds, _ = build_dataset(parse_config(merge_config({**base, "runtime": {"workers": workers}})), [str(crawl)])
        asks, op = {}, ds._logical_plan.dag
        while op is not None:
            if (args := getattr(op, "ray_remote_args", None)) is not None:
                asks[op.name] = args.get("num_cpus", 1)
            op = op.input_dependencies[0] if op.input_dependencies else None
        assert any("RandomizeBlockOrder" in n for n in asks), asks
        actor = next(v for n, v in asks.items() if "ChainActor" in n)
        # One worker reads inside its actor (the read asks what the actor asks, to be fused).
        inside = ("ChainActor", "_ReadFiles") if workers == 1 else ("ChainActor",)
        others = [v for n, v in asks.items() if not any(name in n for name in inside)]
        assert workers * actor + 2 * max(others) <= workers, asks
    rows = ds.take_all()
    active = [r for r in rows if r["drop_reason"] is None]
    assert len(rows) == 3 and active and all(r["ppl_bucket"] in ("head", "middle", "tail") for r in active)
    assert recorded_cutoffs(ds)["documents"] == len(active)


def test_buckets_follow_the_perplexity_stage_by_default_and_say_when_they_cannot():
    from curate.config import CurateConfigError, merge_config, parse_config

    assert parse_config(merge_config()).enabled("ppl_bucket")  # the default run labels buckets
    assert not parse_config(merge_config({"perplexity": {"enabled": False}})).enabled("ppl_bucket")
    with pytest.raises(CurateConfigError, match="ppl_bucket needs the perplexity stage"):
        parse_config(merge_config({"perplexity": {"enabled": False}, "ppl_bucket": {"enabled": True}}))
    with pytest.raises(CurateConfigError, match="true, false or auto"):
        parse_config(merge_config({"ppl_bucket": {"enabled": "yes"}}))
    with pytest.raises(CurateConfigError, match="must be true or false"):
        parse_config(merge_config({"quality": {"enabled": "auto"}}))  # auto only where a stage needs another
