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


_OUTPUT = "_output"  # partition column of the one write: "data" or "dropped"; not stored in the files
_COUNT_COLUMNS = (DROP_STAGE, DROP_REASON, "dup_text_rule", "dup_cluster_size")


def _tag_output(table: pa.Table) -> pa.Table:
    """Kept rows are checked as documents (a bad row fails naming row and field); every row is
    tagged with the directory it goes to."""
    dropped = pc.is_valid(table.column(DROP_REASON))
    kept = table.filter(pc.invert(dropped))
    if kept.num_rows:
        validate(kept, "document")
    return table.append_column(_OUTPUT, pc.if_else(dropped, pa.scalar("dropped"), pa.scalar("data")))


def _written_counts(root: Path) -> Counter:
    """Rows per (drop_stage, drop_reason, dup_text_rule, survivor) read back from the written
    files' four small columns: exact by construction, and no second Ray execution."""
    import pyarrow.dataset as pads

    counts: Counter = Counter()
    for part in ("data", "dropped"):
        files = sorted(str(f) for f in (root / part).glob("*.parquet"))
        if not files:
            continue
        for batch in pads.dataset(files, format="parquet").to_batches(columns=list(_COUNT_COLUMNS)):
            for row in _block_counts(pa.Table.from_batches([batch])).to_pylist():
                counts[(row["stage"], row["reason"], row["rule"], row["survivor"])] += row["n_sum"]
    return counts


def run_dedup_dir(input_dir: str | Path, output_dir: str | Path, config: DedupConfig | dict | None = None) -> dict:
    """Dedup the documents of `input_dir`; write OUTPUT/data, OUTPUT/dropped, accounting and card atomically.

    One Ray Data execution after dedup's own steps: the labeled rows stream into one
    partitioned write (kept rows to data/, the rest to dropped/), and the counts are read
    back from the written files.
    """
    import shutil

    import ray

    from curate.dedup.distributed import deduplicate

    config = DedupConfig.from_any(config)
    files = input_files(input_dir)
    started_at = _now()
    started = time.time()
    with dataset_dir(output_dir, "document") as dataset:
        staging = dataset.root / "_staging"
        out = deduplicate(ray.data.read_parquet(files), config)
        out.map_batches(_tag_output, batch_format="pyarrow").write_parquet(str(staging), partition_cols=[_OUTPUT])
        for part in ("data", "dropped"):
            written = staging / f"{_OUTPUT}={part}"
            if written.is_dir():
                written.rename(dataset.root / part)
        shutil.rmtree(staging, ignore_errors=True)
        # Dedup and the write of its output are one stream now: the stage's seconds hold both.
        seconds = time.time() - started
        counts = _written_counts(dataset.root)
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
        run = {"job": "dedup", "started": started_at, "input": str(input_dir), "input_files": len(files),
               "config": config.as_dict(), "duplicate_clusters": clusters, "text_rules": dict(sorted(rules.items())),
               "finished": _now()}
        dataset.finish(stages, run)
    return {"rows_in": total, "kept": kept, "dropped": {**earlier, **dedup_drops}, "seconds": round(seconds, 3),
            "duplicate_clusters": clusters, "text_rules": dict(rules), "output": str(Path(output_dir).resolve())}
