"""The training set's data card, written into the run directory as `train_data/`.

The inputs' own cards (from curate/synth, copied to `data_cards/`) describe each dataset;
this one describes what the run trained on after the training-time filters: one small row
per input record (token counts, or the drop reason and its detail). It is laid out as a
raymill dataset directory (data/ = kept, dropped/, accounting.json) so `schemas.card`
computes and renders it like every other card. The rows carry no text, so the directory
stays small beside the corpus.

Beside them, `lineage/` holds which records went into which packed sequences (train.lineage;
linked from the token cache), and the card's run record (`accounting.json` run.lineage, the
card's run extras) says where it is, with its counts: sequences, documents, documents split
across sequences, and each dataset's path for `jobs/card.py RUN --trace DOC_ID`.

A stage's stats object takes part by offering `card_dataset()` (a Ray Dataset or Arrow
table of those rows) and `funnel()` (a list of schemas.funnel.StageCount); `lineage_files()`
or `lineage_tables()` where it packs sequences.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from train import lineage

log = logging.getLogger(__name__)

TRAIN_DATA_DIR = lineage.TRAIN_DATA_DIR


def _batches(rows: Any) -> Iterator[pa.Table]:
    if isinstance(rows, pa.Table):
        yield rows
        return
    for batch in rows.iter_batches(batch_format="pyarrow", batch_size=8192):
        yield batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])


class _SplitWriter:
    """Appends tables to one Parquet file, opened on the first non-empty table."""

    def __init__(self, path: Path):
        self.path, self.writer, self.rows = path, None, 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table.cast(self.writer.schema))
        self.rows += table.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_training_card(run_dir: str | Path, cfg, stats: Any, kind: str | None = None) -> Path | None:
    """Write `<run_dir>/train_data/` (rows, accounting, card/); returns the card directory, or
    None where the stats offer no card rows. Kept and dropped counts must match the funnel."""
    from schemas.dataset_io import dataset_dir

    if not hasattr(stats, "card_dataset"):
        return None
    if kind is None:  # the stage's workflow knows the kind of its training set
        from train.stages import get_workflow

        kind = get_workflow(cfg.launch.stage).card_kind
    stage = cfg.launch.stage
    funnel = stats.funnel()
    target = Path(run_dir) / TRAIN_DATA_DIR
    run = {"job": f"train --stage {stage}", "config": cfg.to_dict(), "inputs": [str(d) for d in cfg.data.data],
           "models": [str(cfg.model.tokenizer or cfg.model.model)],
           "note": "the training set as this run saw it: one row per input record, no text"}
    with dataset_dir(target, kind) as out:
        # The rows carry no text, so they are not records of the kind: written as they are.
        kept, dropped = _SplitWriter(out.data_dir / "part-00000.parquet"), _SplitWriter(out.dropped_dir / "part-00000.parquet")
        try:
            # card_tables(): the same rows without a Ray Data execution, where the stats can read them directly
            rows = stats.card_tables() if hasattr(stats, "card_tables") else _batches(stats.card_dataset())
            for table in rows:
                is_drop = pc.is_valid(table.column("drop_reason"))
                kept.write(table.filter(pc.invert(is_drop)).drop_columns(
                    [c for c in ("drop_reason", "drop_detail") if c in table.column_names]))
                gone = table.filter(is_drop)
                dropped.write(gone.append_column("drop_stage", pa.array([funnel[-1].stage] * gone.num_rows, pa.string())))
        finally:
            kept.close()
            dropped.close()
        if kept.rows != funnel[-1].kept or dropped.rows != sum(sum(s.dropped.values()) for s in funnel):
            raise RuntimeError(f"training card rows (kept {kept.rows}, dropped {dropped.rows}) do not match "
                               f"the data stats {[vars(s) for s in funnel]}")
        sequences = lineage.write_lineage(out.root / lineage.LINEAGE_DIR, stats)
        if sequences is not None:
            lineage.check_sequences(sequences, stats)
            run["lineage"] = lineage.lineage_summary(stats, sequences, dict(getattr(stats, "sources", None) or {}))
        out.finish(funnel, run)
    return target / "card"


def try_write_training_card(run_dir: str | Path, cfg, stats: Any, kind: str | None = None) -> Path | None:
    """The card is a report: a failure to build it is logged, never fatal to a finished run."""
    try:
        return write_training_card(run_dir, cfg, stats, kind)
    except Exception as exc:  # noqa: BLE001
        log.warning("no training data card for %s: %s", run_dir, exc)
        return None
