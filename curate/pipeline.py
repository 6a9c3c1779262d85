"""The curate runner: config -> ordered stages -> Ray Data -> kept / dropped Parquet + accounting.

Execution plan
- Consecutive per-row stages are fused into one `map_batches` call ("segment"), split
  only at global stages (dedup). A segment that holds a model stage (`needs_actor`:
  fastText LID, the perplexity LM) runs in an actor pool, so the model loads once per
  actor and the cheap stages ride along without an extra hand-off; other segments
  run as tasks.
- Every stage times itself per batch and spreads the seconds over the batch's rows in
  a hidden `_sec_<stage>` column, so per-stage time survives streaming, retries and
  shuffles and is summed at the end like any other column.
- The result is written once to a staging directory; the accounting (rows in / kept /
  dropped by reason / seconds per stage) is an aggregation over its small columns, and
  two more streaming passes split it into `data/` (kept rows, validated `document`
  records) and `dropped/` (with drop_reason, drop_stage and every label). All of it
  happens inside `atomic_output_dir`, so a failed run leaves no final directory.
The driver never holds more than one small summary row per block.
"""
from __future__ import annotations

import functools
import importlib
import logging
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from curate.config import STAGE_ORDER, CurateConfig
from curate.stage import DROP_REASON, DROP_STAGE, Stage, set_column
from schemas.funnel import StageCount, write_accounting
from schemas.validate import validate

log = logging.getLogger(__name__)

READ_STAGE = "read"
DEDUP_STAGE = "dedup"
TIME_PREFIX = "_sec_"
DEFAULT_OUTPUT = "output/curate"
# Heavy columns that never go into the outputs.
DROP_FROM_OUTPUT = ("raw", "http_headers")


# ---------------------------------------------------------------- stage construction

def _stage_factories(config: CurateConfig) -> list[tuple[str, Callable[[], Stage]]]:
    """(name, zero-argument constructor) for every enabled per-row stage, in order; dedup as a marker."""
    from curate.clean_lines import CleanLinesStage
    from curate.extract import ExtractStage
    from curate.heuristics import HeuristicsStage, Thresholds
    from curate.langid import LangIdStage
    from curate.pii import PiiStage
    from curate.rules import RuleFilterStage
    from curate.sensitive import SensitiveStage
    from curate.url_filter import UrlFilterStage

    known_thresholds = set(Thresholds.__dataclass_fields__)
    heuristic_thresholds = {k: v for k, v in config.thresholds.items() if k in known_thresholds}
    builders: dict[str, Callable[[dict], Callable[[], Stage]]] = {
        "url_filter": lambda s: functools.partial(UrlFilterStage, s),
        "extract": lambda s: functools.partial(ExtractStage, s),
        "langid": lambda s: functools.partial(LangIdStage, s),
        "heuristics": lambda s: functools.partial(HeuristicsStage, heuristic_thresholds, **s),
        "clean_lines": lambda s: functools.partial(CleanLinesStage, **s),
        "pii": lambda s: functools.partial(PiiStage, **s),
        "sensitive": lambda s: functools.partial(SensitiveStage, **s),
        "quality": lambda s: _quality_factory(s),
        "filter": lambda s: functools.partial(RuleFilterStage, config.rules, config.thresholds),
    }
    out = []
    for name in STAGE_ORDER:
        if not config.enabled(name):
            continue
        if name == DEDUP_STAGE:
            out.append((name, None))
            continue
        out.append((name, builders[name](config.stages[name])))
    return out


def _quality_factory(section: dict) -> Callable[[], Stage]:
    from curate.quality import QualityStage

    return functools.partial(QualityStage, **section)


def check_stages(config: CurateConfig) -> list[tuple[str, Callable[[], Stage] | None, bool]]:
    """Build every stage once in the driver so config errors surface before any work.

    Returns (name, factory, needs_actor) triples.
    """
    plan = []
    for name, factory in _stage_factories(config):
        if factory is None:
            plan.append((name, None, False))
            continue
        try:
            stage = factory()
        except TypeError as exc:  # unknown keyword in a stage section
            raise ValueError(f"config section {name!r}: {exc}") from None
        plan.append((name, factory, bool(getattr(stage, "needs_actor", False))))
    return plan


# ---------------------------------------------------------------- batch callables

class StageChain:
    """Apply stages in order to a pyarrow batch, recording per-row seconds per stage."""

    def __init__(self, stages: list[Stage]):
        self.stages = stages

    def __call__(self, batch: pa.Table) -> pa.Table:
        for stage in self.stages:
            start = time.perf_counter()
            batch = stage(batch)
            per_row = (time.perf_counter() - start) / max(1, batch.num_rows)
            batch = set_column(batch, TIME_PREFIX + stage.name, pa.array([per_row] * batch.num_rows, pa.float64()))
        return batch


def _chain_task(factories: list[Callable[[], Stage]]) -> Callable[[pa.Table], pa.Table]:
    """A picklable task function; stages are built once per worker process and cached."""
    cache: dict[str, StageChain] = {}

    def run(batch: pa.Table) -> pa.Table:
        if "chain" not in cache:
            cache["chain"] = StageChain([f() for f in factories])
        return cache["chain"](batch)

    return run


class ChainActor:
    """Actor-pool callable: builds the stages (and their models) once in __init__."""

    def __init__(self, factories: list[Callable[[], Stage]]):
        self.chain = StageChain([f() for f in factories])

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.chain(batch)


def fill_dedup_stage(batch: pa.Table) -> pa.Table:
    """Rows the dedup stage dropped without naming a stage get drop_stage = 'dedup'."""
    if DROP_REASON not in batch.column_names or batch.num_rows == 0:
        return batch
    stage = batch.column(DROP_STAGE) if DROP_STAGE in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    missing = pc.and_(pc.is_valid(batch.column(DROP_REASON)), pc.is_null(stage))
    return set_column(batch, DROP_STAGE, pc.if_else(missing, pa.scalar(DEDUP_STAGE), stage))


# ---------------------------------------------------------------- output helpers

def _without(batch: pa.Table, names) -> pa.Table:
    return batch.drop_columns([n for n in names if n in batch.column_names])


def summarize_batch(batch: pa.Table) -> pa.Table:
    """One row per (drop_stage, drop_reason) in the batch with its count and the time columns' sums."""
    n = batch.num_rows
    stage = batch.column(DROP_STAGE) if DROP_STAGE in batch.column_names else pa.nulls(n, pa.string())
    reason = batch.column(DROP_REASON) if DROP_REASON in batch.column_names else pa.nulls(n, pa.string())
    groups: dict[tuple, int] = defaultdict(int)
    for s, r in zip(stage.to_pylist(), reason.to_pylist()):
        groups[(s, r)] += 1
    seconds = {name[len(TIME_PREFIX):]: pc.sum(batch.column(name)).as_py() or 0.0
               for name in batch.column_names if name.startswith(TIME_PREFIX)}
    rows = [{"drop_stage": s, "drop_reason": r, "rows": c, "seconds": "{}"} for (s, r), c in groups.items()]
    import json

    if rows:
        rows[0]["seconds"] = json.dumps(seconds)
    else:
        rows = [{"drop_stage": None, "drop_reason": None, "rows": 0, "seconds": json.dumps(seconds)}]
    return pa.Table.from_pylist(rows, schema=pa.schema([("drop_stage", pa.string()), ("drop_reason", pa.string()),
                                                        ("rows", pa.int64()), ("seconds", pa.string())]))


def kept_rows(batch: pa.Table) -> pa.Table:
    """Kept rows as validated `document` records: no drop columns, no timing, no raw bytes."""
    if DROP_REASON in batch.column_names:
        batch = batch.filter(pc.is_null(batch.column(DROP_REASON)))
    batch = _without(batch, [DROP_REASON, DROP_STAGE, *DROP_FROM_OUTPUT])
    batch = _without(batch, [n for n in batch.column_names if n.startswith(TIME_PREFIX)])
    return validate(batch, "document")


def dropped_rows(batch: pa.Table) -> pa.Table:
    if DROP_REASON not in batch.column_names:
        return batch.slice(0, 0)
    batch = batch.filter(pc.is_valid(batch.column(DROP_REASON)))
    batch = _without(batch, [*DROP_FROM_OUTPUT, *(n for n in batch.column_names if n.startswith(TIME_PREFIX))])
    return batch


def conform_nulls(batch: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """Give all-null columns a concrete type so every staged file has the same schema."""
    for i, f in enumerate(batch.schema):
        if pa.types.is_null(f.type):
            batch = batch.set_column(i, f.name, pa.nulls(batch.num_rows, types.get(f.name, pa.string())))
    return batch


def _known_types() -> dict[str, pa.DataType]:
    from curate.heuristics import LABEL_TYPES
    from schemas.records import DOCUMENT

    types = {f.name: f.type for f in DOCUMENT.required + DOCUMENT.optional}
    types.update(LABEL_TYPES)
    types.update({"lines_removed": pa.int64(), "pii_email_count": pa.int64(), "pii_ip_count": pa.int64(),
                  "pii_phone_count": pa.int64(), "sensitive_count": pa.int64(), "sensitive_ratio": pa.float64(),
                  "lang_score": pa.float64(), "url_score": pa.float64(), "ppl": pa.float64(),
                  "quality_score": pa.float64()})
    return types


# ---------------------------------------------------------------- accounting

def build_accounting(summary_rows: list[dict], stage_names: list[str]) -> list[StageCount]:
    """Funnel from (drop_stage, drop_reason, rows) groups and per-stage seconds.

    Stages appear in pipeline order; a drop_stage the plan does not know (e.g. a name the
    dedup stage chose) is placed right after dedup, or at the end.
    """
    import json

    dropped: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    seconds: dict[str, float] = defaultdict(float)
    total = 0
    for row in summary_rows:
        total += row["rows"]
        if row["drop_reason"] is not None:
            dropped[row["drop_stage"] or "unknown"][row["drop_reason"]] += row["rows"]
        for name, sec in json.loads(row["seconds"] or "{}").items():
            seconds[name] += sec
    order = list(stage_names)
    for name in dropped:
        if name not in order:
            at = order.index(DEDUP_STAGE) + 1 if DEDUP_STAGE in order else len(order)
            order.insert(at, name)
    counts, rows_in = [], total
    for name in order:
        reasons = dict(sorted(dropped.get(name, {}).items()))
        out = StageCount(stage=name, rows_in=rows_in, kept=rows_in - sum(reasons.values()), dropped=reasons,
                         seconds=round(seconds.get(name, 0.0), 6))
        counts.append(out)
        rows_in = out.kept
    return counts


# ---------------------------------------------------------------- the run

def build_dataset(config: CurateConfig, inputs, plan=None):
    """Lazy Ray Dataset of every input row after all enabled stages (nothing runs yet)."""
    import ray

    from curate.readers import read_inputs

    plan = plan or check_stages(config)
    ds, family = read_inputs(inputs, config.read)
    workers = config.runtime.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    batch_size = config.runtime.batch_size
    segment: list[tuple[str, Callable, bool]] = []

    def flush(ds):
        if not segment:
            return ds
        factories = [f for _, f, _ in segment]
        if any(actor for _, _, actor in segment):
            ds = ds.map_batches(ChainActor, fn_constructor_kwargs={"factories": factories}, batch_size=batch_size,
                                batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
                                num_cpus=1)
        else:
            ds = ds.map_batches(_chain_task(factories), batch_size=batch_size, batch_format="pyarrow")
        segment.clear()
        return ds

    for name, factory, needs_actor in plan:
        if name == DEDUP_STAGE:
            ds = flush(ds)
            ds = _run_dedup(ds, config.stages[DEDUP_STAGE])
            continue
        if name == "extract" and family != "raw_page":
            continue  # documents from JSONL/Parquet have text already
        segment.append((name, factory, needs_actor))
    ds = flush(ds)
    types = _known_types()
    return ds.map_batches(conform_nulls, fn_kwargs={"types": types}, batch_format="pyarrow"), family


def _run_dedup(ds, section: dict):
    try:
        dedup = importlib.import_module("curate.dedup")
        deduplicate = getattr(dedup, "deduplicate")
    except (ImportError, AttributeError):
        log.warning("dedup is enabled but curate.dedup.deduplicate is not available: skipping it")
        return ds
    try:
        ds = deduplicate(ds, section)
    except ImportError as exc:  # the dedup package is being built beside this one
        log.warning("dedup is enabled but curate.dedup cannot run (%s): skipping it", exc)
        return ds
    return ds.map_batches(fill_dedup_stage, batch_format="pyarrow")


def stage_names(plan, family: str = "raw_page") -> list[str]:
    names = [READ_STAGE]
    for name, _, _ in plan:
        if name == "extract" and family != "raw_page":
            continue
        names.append(name)
    return names


def run_curate(config: CurateConfig, inputs, output_dir: str | Path, write_card: bool = True) -> dict:
    """Run the whole pipeline into `output_dir` atomically; return the run summary."""
    import ray

    from schemas.dataset_io import atomic_output_dir

    plan = check_stages(config)
    started = time.time()
    t0 = time.perf_counter()
    with atomic_output_dir(output_dir) as tmp:
        staging = tmp / "_staging"
        ds, family = build_dataset(config, inputs, plan)
        ds.write_parquet(str(staging))
        staged = ray.data.read_parquet(str(staging))
        summary = staged.map_batches(summarize_batch, batch_format="pyarrow").take_all()
        counts = build_accounting(summary, stage_names(plan, family))
        staged.map_batches(kept_rows, batch_format="pyarrow").write_parquet(str(tmp / "data"))
        staged.map_batches(dropped_rows, batch_format="pyarrow").write_parquet(str(tmp / "dropped"))
        for sub in ("data", "dropped"):
            (tmp / sub).mkdir(exist_ok=True)
        shutil.rmtree(staging)
        run = {
            "job": "curate",
            "inputs": [str(i) for i in inputs] if isinstance(inputs, (list, tuple)) else str(inputs),
            "input_family": family,
            "started_at": started,
            "wall_seconds": round(time.perf_counter() - t0, 3),
            "untimed_stages": [READ_STAGE] + ([DEDUP_STAGE] if config.enabled(DEDUP_STAGE) else []),
            "config": config.raw,
        }
        write_accounting(tmp, counts, run)
        if write_card:
            _write_card(tmp, run, counts)
    total = counts[0].rows_in if counts else 0
    kept = counts[-1].kept if counts else 0
    return {"output": str(Path(output_dir).resolve()), "rows_in": total, "kept": kept, "dropped": total - kept,
            "stages": [c.stage for c in counts], "wall_seconds": run["wall_seconds"]}


def _write_card(directory: Path, run: dict, counts: list[StageCount]) -> None:
    try:
        card = importlib.import_module("schemas.card")
    except ImportError:
        log.info("schemas.card is not available: no dataset card written")
        return
    card.write_card(directory, kind="document", run=run, funnel=counts, text_column="text")
