"""Write a synthesized dataset directory: data/ (validated kind), dropped/, accounting.json, card/.

The layout is the one `schemas.card.write_card` reads. Dropped rows are not records of
the dataset's kind (a rejected instruction has no assistant turn), so they are written
as plain Parquet with id, text, drop_reason, drop_stage and the raw model output.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas.dataset_io import dataset_dir
from schemas.funnel import StageCount
from schemas.validate import table_from_rows
from synth.checkpoint import table_from_dicts

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
    with dataset_dir(output, kind) as out:
        if table is not None:
            out.write_data(table)
        if dropped:
            out.write_dropped(dropped_table(dropped))
        out.finish(stages, run, card=card)
    return Path(output)
