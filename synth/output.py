"""Write a synthesized dataset directory: data/ (validated kind), dropped/, accounting.json, card/.

The layout is the one `schemas.card.write_card` reads. Dropped rows are not records of
the dataset's kind (a rejected instruction has no assistant turn), so they are written
as plain Parquet with id, text, drop_reason, drop_stage and the raw model output.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.dataset_io import atomic_output_dir, write_json, write_parquet
from schemas.funnel import StageCount, write_accounting
from schemas.validate import table_from_rows
from synth.checkpoint import table_from_dicts

log = logging.getLogger(__name__)

DATA_DIR, DROPPED_DIR = "data", "dropped"
HTTP_ERROR = "http_error"  # the drop reason every synth stage gives a model call that failed after retries
DROPPED_REQUIRED = ("id", "text", "drop_reason", "drop_stage")


def dropped_table(rows: list[dict]) -> pa.Table:
    for i, row in enumerate(rows):
        for name in DROPPED_REQUIRED:
            if row.get(name) is None:
                raise ValueError(f"dropped row {i} (id={row.get('id')!r}): field {name!r} is missing")
    return table_from_dicts(rows)


def failure_warnings(stages: list[StageCount]) -> list[str]:
    """A card warning per stage whose model calls failed after retries: the run went on without them."""
    out = []
    for s in stages:
        n = s.dropped.get(HTTP_ERROR, 0)
        if n:
            out.append(f"stage {s.stage!r}: {n} item(s) dropped because model calls failed after retries "
                       f"({HTTP_ERROR}); the run went on without them (the dropped rows hold the errors)")
    return out


def write_dataset(output: str | Path, kind: str, rows: list[dict], dropped: list[dict], stages: list[StageCount],
                  run: dict[str, Any], card: bool = True) -> Path:
    """Validate and write everything into a temporary directory, then rename it into place."""
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{kind} output: id {dup!r} appears more than once")
    table = table_from_rows(rows, kind) if rows else None
    run = {**run, "warnings": list(run.get("warnings") or []) + failure_warnings(stages)}
    with atomic_output_dir(output) as tmp:
        if table is not None:
            write_parquet(table, tmp / DATA_DIR, kind)
        else:
            (tmp / DATA_DIR).mkdir()
        if dropped:
            (tmp / DROPPED_DIR).mkdir()
            pq.write_table(dropped_table(dropped), tmp / DROPPED_DIR / "part-00000.parquet")
        write_accounting(tmp, stages, run)
        if card:
            _write_card(tmp, kind, run, stages)
    return Path(output)


def _write_card(directory: Path, kind: str, run: dict, stages: list[StageCount]) -> None:
    try:
        from schemas.card import write_card
    except ImportError:  # the card module is optional for synthesis
        write_json({"kind": kind, "run": run}, directory / "card.json")
        return
    write_card(directory, kind=kind, run=run, funnel=stages)
