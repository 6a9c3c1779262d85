"""Card tables: the funnel adds up and statistics equal a direct pyarrow.compute computation."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import schemas.card as card_mod
import schemas.card_stats as card_stats
from schemas.card import QUANTILE_NAMES, compute_card, read_card, save_card, write_card
from schemas.card_stats import QUANTILES
from schemas.dataset_io import read_parquet_dir
from schemas.funnel import StageCount
from tests.unit.card_data import write_document_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    directory, stages = write_document_dataset(tmp_path_factory.mktemp("card") / "ds", n=300, files=3)
    return directory, stages


@pytest.fixture(scope="module")
def card(dataset):
    directory, _ = dataset
    return read_card(write_card(directory, "document") / "card.arrow")


def _stat(card, split, column) -> dict:
    rows = [r for r in card.table("stats").to_pylist() if r["split"] == split and r["column"] == column]
    assert len(rows) == 1, f"{split}/{column}: {rows}"
    return rows[0]


def test_funnel_adds_up_for_every_stage(card, dataset):
    _, stages = dataset
    funnel = card.table("funnel").to_pylist()
    drops = card.table("drops").to_pylist()
    assert [f["stage"] for f in funnel] == [s.stage for s in stages]
    for f in funnel:
        by_reason = sum(d["rows"] for d in drops if d["stage"] == f["stage"])
        assert f["rows_in"] == f["kept"] + f["dropped"], f
        assert f["dropped"] == by_reason, f
    # Stages chain, and the funnel agrees with the files on disk.
    for before, after in zip(funnel, funnel[1:]):
        assert after["rows_in"] == before["kept"]
    assert funnel[-1]["kept"] == card.rows_kept
    assert funnel[0]["rows_in"] - funnel[-1]["kept"] == card.rows_dropped
    assert card.run["warnings"] == []


def test_funnel_that_does_not_add_up_is_refused(dataset):
    directory, _ = dataset
    with pytest.raises(ValueError, match="stage 'broken'.*unaccounted"):
        compute_card(directory, "document", funnel=[StageCount("broken", 10, 5, {"x": 3})])


@pytest.mark.parametrize("split,subdir", [("kept", "data"), ("dropped", "dropped")])
def test_numeric_statistics_match_pyarrow_compute(card, dataset, split, subdir):
    directory, _ = dataset
    table = read_parquet_dir(directory / subdir)
    columns = {"gopher_word_count": table.column("gopher_word_count"), "perplexity": table.column("perplexity"),
               "quality_score": table.column("quality_score"), "text_chars": pc.utf8_length(table.column("text"))}
    for name, col in columns.items():
        st = _stat(card, split, name)
        assert st["count"] == pc.count(col).as_py()
        assert st["nulls"] == col.null_count
        assert st["min"] == pytest.approx(pc.min(col).as_py())
        assert st["max"] == pytest.approx(pc.max(col).as_py())
        assert st["mean"] == pytest.approx(pc.mean(col).as_py(), rel=1e-9)
        assert st["std"] == pytest.approx(pc.stddev(col).as_py(), rel=1e-6)
        expected_q = pc.quantile(col, q=list(QUANTILES), interpolation="linear").to_pylist()
        assert [st[q] for q in QUANTILE_NAMES] == pytest.approx(expected_q, rel=1e-9)
        assert st["quantiles_exact"] is True
        # Histogram bins: contiguous, counts equal a direct range count, and they add up to `count`.
        bins = [h for h in card.table("histograms").to_pylist() if h["split"] == split and h["column"] == name]
        assert sum(h["count"] for h in bins) == st["count"]
        for i, h in enumerate(bins):
            upper = pc.less_equal if i == len(bins) - 1 else pc.less
            inside = pc.and_(pc.greater_equal(col, h["lo"]), upper(col, h["hi"]))
            assert h["count"] == pc.sum(pc.cast(inside, pa.int64())).as_py(), (name, h)


def test_kept_and_dropped_share_histogram_edges(card):
    hist = card.table("histograms").to_pylist()
    for col in ("gopher_word_count", "perplexity"):
        kept = [(h["lo"], h["hi"]) for h in hist if h["split"] == "kept" and h["column"] == col]
        dropped = [(h["lo"], h["hi"]) for h in hist if h["split"] == "dropped" and h["column"] == col]
        assert kept and kept == dropped


def test_categorical_top_values_match_value_counts(card, dataset):
    directory, _ = dataset
    for split, subdir, column in (("kept", "data", "lang"), ("kept", "data", "domain"),
                                  ("dropped", "dropped", "drop_reason"), ("dropped", "dropped", "lang")):
        col = read_parquet_dir(directory / subdir).column(column)
        expected = {r["values"]: r["counts"] for r in pc.value_counts(col).to_pylist()}
        top = {r["value"]: r["count"] for r in card.table("top_values").to_pylist()
               if r["split"] == split and r["column"] == column}
        assert top == expected
        assert _stat(card, split, column)["distinct"] == len(expected)


def test_samples_are_truncated_and_cover_every_drop_reason(card, dataset):
    directory, _ = dataset
    samples = card.table("samples").to_pylist()
    kept = [s for s in samples if s["split"] == "kept"]
    assert len(kept) == card_mod.SAMPLES_PER_GROUP
    kept_ids = set(read_parquet_dir(directory / "data").column("id").to_pylist())
    assert all(s["id"] in kept_ids for s in kept)
    reasons = set(read_parquet_dir(directory / "dropped").column("drop_reason").to_pylist())
    assert {s["reason"] for s in samples if s["split"] == "dropped"} == reasons
    for s in samples:
        assert len(s["text"]) == min(s["text_chars"], card_mod.SAMPLE_TEXT_CHARS)
        assert "lang" in json.loads(s["labels"])


def test_run_metadata(card):
    run = card.run
    assert run["job"] == "curate" and run["kind"] == "document" and run["schema_version"] == 1
    assert run["code_version"] and run["code_version"] != "unknown"
    assert json.loads(run["config_json"]) == {"gopher": {"min_words": 50}}
    assert run["models"] == ["lid.176.ftz"]
    assert run["inputs"][0]["fingerprint"].startswith("sha256:")


def test_streaming_with_small_batches_and_reservoir(dataset, monkeypatch):
    """Many batches and a reservoir smaller than the data: exact moments, estimated quantiles."""
    directory, _ = dataset
    monkeypatch.setattr(card_mod, "BATCH_ROWS", 16)
    monkeypatch.setattr(card_stats, "RESERVOIR_SIZE", 64)
    card = compute_card(directory, "document")
    col = read_parquet_dir(directory / "data").column("gopher_word_count")
    st = _stat(card, "kept", "gopher_word_count")
    assert st["count"] == len(col) and st["min"] == pc.min(col).as_py() and st["max"] == pc.max(col).as_py()
    assert st["mean"] == pytest.approx(pc.mean(col).as_py(), rel=1e-9)
    assert st["quantiles_exact"] is False
    spread = pc.max(col).as_py() - pc.min(col).as_py()
    assert abs(st["q50"] - pc.quantile(col, q=0.5).to_pylist()[0]) < 0.25 * spread
    assert sum(h["count"] for h in card.table("histograms").to_pylist()
               if h["split"] == "kept" and h["column"] == "gopher_word_count") == len(col)


def test_no_accounting_rebuilds_funnel_from_dropped_rows(tmp_path):
    directory, stages = write_document_dataset(tmp_path / "ds", n=80, accounting=False)
    card = compute_card(directory, "document")
    (stage,) = card.table("funnel").to_pylist()
    assert stage["rows_in"] == stages[0].rows_in and stage["kept"] == card.rows_kept
    assert "no accounting.json" in card.run["warnings"][0]


def test_card_arrow_round_trip_keeps_tables_and_metadata(card, tmp_path):
    path = save_card(card, tmp_path / "card.arrow")
    schema = pa.ipc.open_file(str(path)).schema
    assert schema.metadata[b"raymill.kind"] == b"document" and schema.metadata[b"raymill.version"] == b"1"
    again = read_card(path)
    for name, table in card.tables.items():
        assert again.table(name).equals(table), name


def test_nan_is_counted_apart_from_nulls():
    st = card_stats.NumericStats(integer=False)
    st.update(pa.array([1.0, None, math.nan, 3.0]))
    assert (st.count, st.nulls, st.nan, st.min, st.max) == (2, 1, 1, 1.0, 3.0)
    assert st.quantiles()[QUANTILES.index(0.5)] == pytest.approx(float(np.median([1.0, 3.0])))


def test_warnings_the_job_recorded_reach_the_card(tmp_path):
    directory, _ = write_document_dataset(tmp_path / "ds", n=60)
    note = "3 model calls failed after retries (http_error in generate)"
    card = compute_card(directory, "document", run={"warnings": [note]})
    assert note in card.run["warnings"]
    rendered = (write_card(directory, "document", run={"warnings": [note]}) / "card.md").read_text()
    assert note in rendered
