"""The whole curate pipeline on local Ray: the embedded sample crawl and real web pages."""
from __future__ import annotations

import gzip
import importlib.util
import json
import random
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from curate.config import merge_config, parse_config
from curate.pipeline import run_curate
from curate.sample_crawl import WarcRecord, ensure_sample_crawl, paragraphs, write_warc
from schemas.dataset_io import is_complete, read_parquet_dir
from schemas.funnel import read_accounting


def _dropped(directory: Path):
    return pads.dataset(str(directory / "dropped"), format="parquet").to_table()


def _dedup_runs() -> bool:
    return importlib.util.find_spec("curate.dedup.distributed") is not None


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("curate")
    crawl = ensure_sample_crawl(root / "cache")
    config = parse_config(merge_config({"dedup": {"enabled": _dedup_runs()}}))
    summary = run_curate(config, [str(crawl)], root / "out", write_card=False)
    return root / "out", summary


def test_sample_every_row_accounted_and_outputs_written(sample_run):
    out, summary = sample_run
    assert is_complete(out)
    stages, run = read_accounting(out)
    dropped = _dropped(out)
    kept_rows = pads.dataset(str(out / "data"), format="parquet").count_rows() \
        if list((out / "data").glob("*.parquet")) else 0
    assert stages[0].stage == "read"
    assert stages[0].rows_in == kept_rows + dropped.num_rows == summary["rows_in"]
    assert stages[-1].kept == kept_rows
    for before, after in zip(stages, stages[1:]):
        assert after.rows_in == before.kept  # the funnel is continuous
    # Every dropped row names its stage and reason, and the counts match the files.
    assert dropped.column("drop_reason").null_count == 0 and dropped.column("drop_stage").null_count == 0
    file_counts = Counter(zip(dropped.column("drop_stage").to_pylist(), dropped.column("drop_reason").to_pylist()))
    assert file_counts == Counter({(s.stage, r): n for s in stages for r, n in s.dropped.items()})
    assert "raw" not in dropped.column_names  # payload bytes never reach the outputs
    assert run["wall_seconds"] > 0
    # Every per-row stage reported its seconds (through the stage clock's files, which are gone).
    timed = [s for s in stages if s.stage not in run["untimed_stages"]]
    assert timed and all(s.seconds > 0 for s in timed), [(s.stage, s.seconds) for s in stages]
    assert run["first_batch_after_seconds"]["job"] > 0 and run["actors_ready_after_seconds"] > 0
    assert not (out / "_clock").exists() and not (out / "_staging").exists()


def test_sample_stages_visibly_act(sample_run):
    out, summary = sample_run
    stages = {s.stage: s for s in read_accounting(out)[0]}
    for name in ("read", "url_filter", "extract", "filter"):
        assert sum(stages[name].dropped.values()) > 0, f"stage {name} dropped nothing on the sample"
    assert any(r.startswith("url_blocklist:") for r in stages["url_filter"].dropped)
    if _dedup_runs():
        assert sum(stages["dedup"].dropped.values()) > 0
    dropped = _dropped(out)
    kept = read_parquet_dir(out / "data", "document")
    # Real articles in six languages survive the published default rules.
    assert summary["kept"] >= 100
    assert set(kept.column("lang").to_pylist()) >= {"en", "de", "fr", "es", "zh", "ja"}
    labeled = [t for t in (dropped, kept) if t.num_rows]
    texts = [x for t in labeled for x in t.filter(pc.is_valid(t.column("lang"))).column("text").to_pylist()]
    assert any("<EMAIL>" in t for t in texts) and any("<PHONE>" in t for t in texts)
    assert not any(re.search(r"[\w.]+@[\w-]+\.example", t) for t in texts)  # no e-mail survives masking
    assert pc.sum(kept.column("lines_removed")).as_py() > 0  # the line cleaner removed notices
    assert not any("[1]" in t or "enable JavaScript" in t for t in kept.column("text").to_pylist())
    filter_reasons = stages["filter"].dropped
    assert "lang_kept" in filter_reasons  # Italian is not in the default keep-list
    assert "sensitive_content" in filter_reasons  # gambling-spam forum threads
    assert any(r.startswith("gopher_") for r in filter_reasons)  # spam and stuffed pages


def test_failing_job_leaves_no_output(tmp_path, ray_session):
    crawl = write_warc(tmp_path / "small.warc.gz", [
        WarcRecord(f"https://site{i}.example.org/a", f"<html><body><article><p>{'Some words here. ' * 30}</p>"
                   f"</article></body></html>".encode()) for i in range(4)])
    # A rule that parses but cannot be evaluated (number compared with a string) fails inside Ray.
    config = parse_config(merge_config({"dedup": {"enabled": False},
                                        "filter": {"rules": [{"name": "bad", "expr": "lang_score >= 'high'"}]}}))
    out = tmp_path / "out"
    with pytest.raises(Exception, match="bad"):
        run_curate(config, [str(crawl)], out, write_card=False)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary left behind


def test_unreadable_input_fails_naming_the_file(tmp_path, ray_session):
    inputs = tmp_path / "in"
    inputs.mkdir()
    pq.write_table(pa.table({"text": ["a fine document"]}), inputs / "good.parquet")
    (inputs / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    out = tmp_path / "out"
    with pytest.raises(OSError, match="broken.parquet: not a readable Parquet file"):
        run_curate(parse_config(merge_config({"dedup": {"enabled": False}})), [str(inputs)], out, write_card=False)
    assert not out.exists()


def test_jsonl_documents_skip_extraction_and_count_bad_lines(tmp_path, ray_session):
    rng = random.Random(7)
    good = [json.dumps({"id": f"d{i}", "text": "\n".join(paragraphs(rng, "en", 4))}) for i in range(6)]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(good + ["{oops", json.dumps({"id": "x", "title": "no text"})]) + "\n")
    summary = run_curate(parse_config(merge_config({"dedup": {"enabled": False}})), [str(path)], tmp_path / "out",
                         write_card=False)
    stages = {s.stage: s for s in read_accounting(tmp_path / "out")[0]}
    assert "extract" not in stages and summary["rows_in"] == 8
    assert stages["read"].dropped == {"invalid_json": 1, "missing_text": 1}
    assert summary["kept"] == 6


def test_ray_is_released_while_the_card_is_drawn(tmp_path, ray_session):
    """run_curate hands Ray back (release_ray) on the calling thread once the outputs are written
    and counted, with the card drawn beside it; the card is the one compute_card makes from the files."""
    import threading

    from schemas.card import compute_card, read_card

    rng = random.Random(11)
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"d{i}", "text": "\n".join(paragraphs(rng, "en", 4))})
                              for i in range(6)) + "\n{oops\n")
    calls = []

    def release():  # stands in for ray.shutdown: the session's Ray is shared by the other tests
        staging = next(p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp"))
        calls.append({"main_thread": threading.current_thread() is threading.main_thread(),
                      "outputs_written": (staging / "data").is_dir() and not (staging / "_staging").exists()})

    summary = run_curate(parse_config(merge_config({"dedup": {"enabled": False}})), [str(path)], tmp_path / "out",
                         release_ray=release)
    assert calls == [{"main_thread": True, "outputs_written": True}]
    assert summary["kept"] == 6 and is_complete(tmp_path / "out")
    written, fresh = read_card(tmp_path / "out"), compute_card(tmp_path / "out", "document", text_column="text")
    for name in ("funnel", "drops", "stats", "histograms", "top_values", "samples"):
        assert written.table(name).equals(fresh.table(name)), name


def _cpu_asks(ds) -> dict[str, float]:
    asks, op = {}, ds._logical_plan.dag
    while op is not None:
        args = getattr(op, "ray_remote_args", None)
        if args is not None:
            asks[op.name] = args.get("num_cpus", 1)
        op = op.input_dependencies[0] if op.input_dependencies else None
    return asks


def test_plan_fits_small_clusters(tmp_path, ray_session):
    # Every operator asks for a fraction of a CPU, so the actors, one read and one write
    # task fit even on a 1-CPU cluster (a whole-CPU task there would wait forever). With
    # several workers the read is cut into batch-sized blocks so that every actor gets work;
    # with one, the read asks for what the actor asks, so Ray Data fuses it into the actor.
    import ray

    from curate.pipeline import build_dataset

    html = b"<html><body><article><p>" + b"A sentence with words. " * 20 + b"</p></article></body></html>"
    crawl = write_warc(tmp_path / "c.warc", [WarcRecord(f"https://a.example/{i}", html) for i in range(3)])
    base = {"dedup": {"enabled": False}, "filter": {"enabled": False}}
    for workers in (1, 2):
        ds, _ = build_dataset(parse_config(merge_config({**base, "runtime": {"workers": workers}})), [str(crawl)])
        asks = _cpu_asks(ds)
        actor = next(v for n, v in asks.items() if "ChainActor" in n)
        read = asks["MapBatches(_ReadFiles)"]
        if workers == 1:
            assert not any("StreamingRepartition" in n for n in asks), asks
            assert read == actor, asks
            tasks = [v for n, v in asks.items() if "ChainActor" not in n and "_ReadFiles" not in n]
            assert actor + 2 * max(tasks) <= 1, asks
            assert len(ds.take_all()) == 3
            assert "MapBatches(_ReadFiles)->MapBatches(ChainActor)" in ds.stats(), ds.stats()
        else:
            assert any("StreamingRepartition" in n for n in asks), asks
            others = [v for n, v in asks.items() if "ChainActor" not in n]
            assert workers * actor + 2 * max(others) <= workers, asks
        # In-flight blocks are capped for this dataset only (the reader would outrun extraction).
        assert ds.context.execution_options.resource_limits.object_store_memory == workers * 64 * 2**20
    assert ray.data.DataContext.get_current().execution_options.resource_limits.object_store_memory != 128 * 2**20
    assert len(ds.take_all()) == 3
    # The cut into blocks runs in the read tasks (same resources, same task cap): no task pool,
    # and no worker processes, of its own.
    assert "MapBatches(_ReadFiles)->StreamingRepartition" in ds.stats(), ds.stats()


def test_one_worker_streams_output_in_bounded_blocks(tmp_path, ray_session, monkeypatch):
    # One worker reads inside its actor: one task then handles the whole file, and its output
    # must still reach the writer in blocks of at most FUSED_BLOCK_BYTES (here ~4 documents),
    # not in one block at the task's end. Every row is written once.
    import curate.pipeline as pipeline

    monkeypatch.setattr(pipeline, "FUSED_BLOCK_BYTES", 4 * 1024)
    rng = random.Random(7)
    pages = ["<html><body><article>" + "".join(f"<p>{p}</p>" for p in paragraphs(rng, "en", 6)) + "</article></body></html>"
             for _ in range(40)]
    crawl = write_warc(tmp_path / "c.warc", [WarcRecord(f"https://a.example/{i}", page.encode()) for i, page in enumerate(pages)])
    # No global stage (dedup, the perplexity buckets' barrier): the writer follows the actor.
    config = parse_config(merge_config({"dedup": {"enabled": False}, "perplexity": {"enabled": False},
                                        "runtime": {"workers": 1}}))
    summary = run_curate(config, [str(crawl)], tmp_path / "out", write_card=False)
    files = sorted((tmp_path / "out" / "data").glob("*.parquet"))
    rows = [pq.read_metadata(f).num_rows for f in files]
    assert summary["rows_in"] == 40 and sum(rows) == summary["kept"] > 0
    assert len(files) > 3 and max(rows) < summary["kept"], rows
    ids = pads.dataset([str(f) for f in files]).to_table(columns=["id"]).column("id").to_pylist()
    assert len(set(ids)) == len(ids)


def _f1(pred: str, gold: str) -> float:
    p, g = Counter(pred.lower().split()), Counter(gold.lower().split())
    common = sum((p & g).values())
    if not common:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(g.values())
    return 2 * precision * recall / (precision + recall)


def test_pipeline_over_real_web_pages(tmp_path, ray_session, shared_data):
    truth = json.loads((shared_data / "web" / "ground-truth.json").read_text(encoding="utf-8"))
    records = []
    for path in sorted((shared_data / "web" / "html").glob("*.html.gz"))[:40]:
        key = path.name.split(".")[0]
        records.append(WarcRecord(truth[key]["url"], gzip.decompress(path.read_bytes())))
    crawl = write_warc(tmp_path / "web.warc.gz", records)
    config = parse_config(merge_config({"dedup": {"enabled": False}, "runtime": {"batch_size": 8}}))
    summary = run_curate(config, [str(crawl)], tmp_path / "out", write_card=False)
    assert summary["rows_in"] == len(records)
    stages = {s.stage: s for s in read_accounting(tmp_path / "out")[0]}
    assert sum(stages["extract"].dropped.values()) <= 2  # real articles are not lost to extraction
    rows = _dropped(tmp_path / "out").to_pylist()
    if list((tmp_path / "out" / "data").glob("*.parquet")):
        rows += read_parquet_dir(tmp_path / "out" / "data", "document").to_pylist()
    by_url = {truth[k]["url"]: truth[k]["articleBody"] for k in truth}
    scored = [_f1(r["text"], by_url[r["url"]]) for r in rows if r.get("lang")]
    assert len(scored) >= len(records) - 2
    assert sum(scored) / len(scored) >= 0.85  # extraction + cleaning + masking keep the article
    assert summary["kept"] > 0  # real news articles pass the published default rules
