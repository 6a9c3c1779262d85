"""Lineage of one document through a curate run: `python jobs/card.py RUN --trace DOC_ID`.

Every row, kept or dropped, carries the `id` the reader gave its raw record (the
WARC-Record-ID, or a hash of file + offset / line: curate.readers), its input file
(`source`) and byte offset (`source_offset`). A trace finds the row in RUN/data or
RUN/dropped and lays out its path: the input, each stage's labels in pipeline order (the
stages after the one that dropped it never saw it), the rule that dropped it, and for a
duplicate cluster its survivor and members. A training run's trace (train.lineage) starts
from the curated dataset's path it recorded; `curated_root` finds the run directory here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curate.stage import DROP_REASON, DROP_STAGE

INPUT_COLUMNS = ("source", "source_offset", "url", "raw_id", "fetch_time")


def _rows(directory: Path, column: str, value: str, columns: list[str] | None = None) -> list[dict]:
    out = []
    for file in sorted(directory.glob("*.parquet")):
        names = pq.read_schema(file).names
        if column not in names:
            continue
        table = pq.read_table(file, filters=[(column, "=", value)],
                              columns=None if columns is None else [c for c in columns if c in names])
        out.extend(table.to_pylist())
    return out


def trace(dataset_dir: str | Path, doc_id: str) -> dict[str, Any]:
    """The row of `doc_id` and its path through the run, as data."""
    from curate.registry import STAGES
    from schemas.funnel import read_accounting

    root = Path(dataset_dir)
    row, split = None, None
    for split in ("data", "dropped"):
        found = _rows(root / split, "id", doc_id)
        if found:
            row = found[0]
            break
    if row is None:
        raise KeyError(f"document {doc_id!r} is in neither {root / 'data'} nor {root / 'dropped'}")
    funnel, _ = read_accounting(root)
    run_stages = [s.stage for s in funnel]
    dropped_at = row.get(DROP_STAGE)
    stages, reached = [], True
    for spec in STAGES:
        if spec.key not in run_stages:
            continue
        labels = {name: row.get(name) for name in spec.label_types() if name in row}
        stages.append({"stage": spec.key, "reached": reached, "labels": labels})
        if spec.key == dropped_at:
            reached = False
    result = {"doc_id": doc_id, "kept": split == "data", "input": {c: row.get(c) for c in INPUT_COLUMNS if c in row},
              "drop_stage": dropped_at, "drop_reason": row.get(DROP_REASON), "stages": stages, "cluster": None}
    cluster_id = row.get("dup_cluster_id")
    if cluster_id is not None and (row.get("dup_cluster_size") or 1) > 1:
        members = []
        for part in ("data", "dropped"):
            for member in _rows(root / part, "dup_cluster_id", cluster_id, ["id", DROP_REASON, "duplicate_of"]):
                members.append({"id": member["id"], "kept": part == "data", "drop_reason": member.get(DROP_REASON)})
        result["cluster"] = {"id": cluster_id, "size": row.get("dup_cluster_size"), "survivor": cluster_id,
                             "duplicate_of": row.get("duplicate_of"), "members": sorted(members, key=lambda m: m["id"])}
    return result


def curated_root(path: str | Path | None) -> Path | None:
    """The curate dataset directory that `path` is, or holds it (its data/ folder or a file
    in it): what a training run records as a dataset's path. None if it is not one."""
    if not path:
        return None
    from schemas.funnel import ACCOUNTING_FILE

    start = Path(path)
    for candidate in [start, *start.parents][:3]:
        if (candidate / ACCOUNTING_FILE).is_file() and (candidate / "data").is_dir():
            return candidate
    return None


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_trace(result: dict[str, Any]) -> str:
    """The trace for people, one fact per line."""
    given = result["input"]
    where = f"{given.get('source')}"
    if given.get("source_offset") is not None:
        where += f" @ byte {given['source_offset']}"
    lines = [f"doc_id   {result['doc_id']}", f"input    {where}"]
    if given.get("url"):
        lines.append(f"url      {given['url']}")
    if result["kept"]:
        lines.append("outcome  kept")
    else:
        lines.append(f"outcome  dropped by {result['drop_stage']}: {result['drop_reason']}")
    lines.append("stages")
    for stage in result["stages"]:
        if not stage["reached"]:
            lines.append(f"  {stage['stage']:<12} (not reached: dropped earlier)")
            continue
        shown = ", ".join(f"{k}={_value(v)}" for k, v in stage["labels"].items() if v is not None)
        mark = f"  <- {result['drop_reason']}" if stage["stage"] == result["drop_stage"] else ""
        lines.append(f"  {stage['stage']:<12} {shown or '-'}{mark}")
    cluster = result["cluster"]
    if cluster:
        role = "survivor" if cluster["survivor"] == result["doc_id"] else f"duplicate of {cluster['duplicate_of']}"
        lines.append(f"cluster  {cluster['id']} ({cluster['size']} documents); this one: {role}")
        for member in cluster["members"]:
            state = "kept (survivor)" if member["kept"] else f"dropped: {member['drop_reason']}"
            lines.append(f"  {member['id']}  {state}")
    return "\n".join(lines)
