"""Dedup one document dataset directory into another: kept rows, dropped rows, accounting, card."""
from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.config import DedupConfig
from curate.dedup.survivor import STAGE
from curate.stage import DROP_REASON, DROP_STAGE
from schemas.dataset_io import dataset_dir
from schemas.funnel import StageCount
from schemas.validate import validate


def input_files(directory: str | Path) -> list[str]:
    """DIR/data/*.parquet of a dataset directory, else DIR/*.parquet."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"input directory {directory} does not exist")
    for candidate in (directory / "data", directory):
        files = sorted(str(p) for p in candidate.glob("*.parquet"))
        if files:
            return files
    raise FileNotFoundError(f"no Parquet files in {directory}/data or {directory}")


def _block_counts(table: pa.Table) -> pa.Table:
    """Rows per (drop_stage, drop_reason, dup_text_rule, is a cluster survivor with copies)."""
    multi = pc.and_(pc.is_null(table.column(DROP_REASON)), pc.greater(pc.fill_null(table.column("dup_cluster_size"), 0), 1))
    keys = pa.table({"stage": table.column(DROP_STAGE), "reason": table.column(DROP_REASON),
                     "rule": table.column("dup_text_rule"), "survivor": multi, "n": pa.array([1] * table.num_rows)})
    return keys.group_by(["stage", "reason", "rule", "survivor"], use_threads=False).aggregate([("n", "sum")])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _validate_document(table: pa.Table) -> pa.Table:
    return validate(table, "document")


def _split(table: pa.Table, dropped: bool) -> pa.Table:
    mask = pc.is_valid(table.column(DROP_REASON))
    return table.filter(mask if dropped else pc.invert(mask))


def run_dedup_dir(input_dir: str | Path, output_dir: str | Path, config: DedupConfig | dict | None = None) -> dict:
    """Dedup the documents of `input_dir`; write OUTPUT/data, OUTPUT/dropped, accounting and card atomically."""
    import ray

    from curate.dedup.distributed import deduplicate

    config = DedupConfig.from_any(config)
    files = input_files(input_dir)
    started_at = _now()
    started = time.time()
    out = deduplicate(ray.data.read_parquet(files), config).materialize()
    seconds = time.time() - started

    counts: Counter = Counter()
    for row in out.map_batches(_block_counts, batch_format="pyarrow", batch_size=None).iter_rows():
        counts[(row["stage"], row["reason"], row["rule"], row["survivor"])] += row["n_sum"]
    total = sum(counts.values())
    earlier: Counter = Counter()
    dedup_drops: Counter = Counter()
    rules: Counter = Counter()
    clusters = 0
    for (stage, reason, rule, survivor), n in counts.items():
        if reason is not None and stage != STAGE:
            earlier[reason] += n
            continue
        if reason is not None:
            dedup_drops[reason] += n
        if rule is not None:
            rules[rule] += n
        clusters += n if survivor else 0
    active = total - sum(earlier.values())
    kept = active - sum(dedup_drops.values())
    stages = []
    if earlier:
        stages.append(StageCount("input", rows_in=total, kept=active, dropped=dict(earlier)))
    stages.append(StageCount(STAGE, rows_in=active, kept=kept, dropped=dict(sorted(dedup_drops.items())),
                             seconds=round(seconds, 3)))
    run = {"job": "dedup", "started": started_at, "input": str(input_dir), "input_files": len(files), "config": config.as_dict(),
           "duplicate_clusters": clusters, "text_rules": dict(sorted(rules.items()))}

    with dataset_dir(output_dir, "document") as dataset:
        for target, dropped in ((dataset.data_dir, False), (dataset.dropped_dir, True)):
            part = out.map_batches(_split, batch_format="pyarrow", fn_kwargs={"dropped": dropped})
            part.map_batches(_validate_document, batch_format="pyarrow").write_parquet(str(target))
        run["finished"] = _now()
        dataset.finish(stages, run)
    return {"rows_in": total, "kept": kept, "dropped": {**earlier, **dedup_drops}, "seconds": round(seconds, 3),
            "duplicate_clusters": clusters, "text_rules": dict(rules), "output": str(Path(output_dir).resolve())}
