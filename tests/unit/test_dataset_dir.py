"""The one dataset-directory writer and the one funnel counter (schemas)."""
from __future__ import annotations

import pyarrow as pa
import pytest

from schemas.dataset_io import dataset_dir, is_complete
from schemas.funnel import Funnel, read_accounting
from schemas.options import OptionsError, from_mapping


def _documents(n: int) -> pa.Table:
    return pa.table({"id": [f"d{i}" for i in range(n)], "text": [f"text {i}" for i in range(n)]})


def test_dataset_dir_writes_data_dropped_accounting_and_card(tmp_path):
    funnel = Funnel(["read", "filter"])
    funnel.keep("read", 3)
    funnel.keep("filter", 2)
    funnel.drop("filter", "too_short")
    with dataset_dir(tmp_path / "out", "document") as out:
        out.write_data(_documents(2))
        out.write_dropped(_documents(1).append_column("drop_stage", pa.array(["filter"]))
                          .append_column("drop_reason", pa.array(["too_short"])))
        out.finish(funnel.as_list(), {"job": "test"})
    assert is_complete(tmp_path / "out")
    stages, run = read_accounting(tmp_path / "out")
    assert [(s.stage, s.rows_in, s.kept, s.dropped) for s in stages] == [
        ("read", 3, 3, {}), ("filter", 3, 2, {"too_short": 1})]
    assert (tmp_path / "out" / "card" / "card.md").exists() and run["job"] == "test"


def test_unfinished_or_failed_dataset_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="without its accounting"):
        with dataset_dir(tmp_path / "a", "document") as out:
            out.write_data(_documents(1))
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match="rows unaccounted"):
        with dataset_dir(tmp_path / "b", "document") as out:
            funnel = Funnel()
            funnel.add("read", rows_in=3, kept=1)
            out.finish(funnel.as_list(), {})
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []


def test_dropped_rows_must_name_stage_and_reason(tmp_path):
    with pytest.raises(ValueError, match="dropped row 1: field 'drop_reason'"):
        with dataset_dir(tmp_path / "c", "document") as out:
            out.write_dropped(_documents(2).append_column("drop_stage", pa.array(["x", "x"]))
                              .append_column("drop_reason", pa.array(["r", None], pa.string())))


def test_funnel_from_final_drops_chains_stages():
    funnel = Funnel.from_drops(5, {("a", "r1"): 2, ("b", "r2"): 1, ("late", "dup"): 1}, ["read", "a", "dedup", "b"],
                               unplaced_after="dedup")
    assert [(s.stage, s.rows_in, s.kept) for s in funnel.as_list()] == [
        ("read", 9, 9), ("a", 9, 7), ("dedup", 7, 7), ("late", 7, 6), ("b", 6, 5)]


def test_options_from_mapping_names_unknown_key_and_valid_ones():
    from dataclasses import dataclass

    @dataclass
    class Opts:
        batch_size: int = 1
        beta: float = 0.1

    assert from_mapping(Opts, {"beta": 0.5}, "data_options").beta == 0.5
    with pytest.raises(OptionsError, match=r"data_options: unknown option 'batch_sise' \(did you mean 'batch_size'\?\); valid: batch_size, beta"):
        from_mapping(Opts, {"batch_sise": 2}, "data_options")
    with pytest.raises(OptionsError, match="expected a mapping"):
        from_mapping(Opts, [1], "data_options")
