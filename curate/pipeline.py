"""The curate runner: config -> ordered stages -> Ray Data -> kept / dropped Parquet + accounting.

Execution plan (one streaming pass over the input)
- Consecutive per-row stages are fused into one `map_batches` call ("segment"), split
  only at global stages (dedup). A segment that holds a model stage (`needs_actor`:
  fastText LID, the perplexity LM) runs in an actor pool, so the model loads once per
  actor and the cheap stages ride along without an extra hand-off; other segments run
  as tasks.
- Reading: one task per file. With several workers the read tasks cut their output into
  batch-sized blocks so every actor gets work; with one worker the read runs inside that
  actor (see build_dataset). Read and write tasks run a few at a time (io_task_limit):
  each task slot is a Python worker process to start.
- A last map tags each row `data` (kept, checked against the `document` schema) or
  `dropped`, and one `write_parquet(partition_cols=...)` writes both outputs; the two
  partition directories become `data/` and `dropped/`.
- Every stage times itself per batch and appends the seconds to its process's file of the
  stage clock (curate.stage_clock); row counts per stage and reason are read back from the written `drop_stage` /
  `drop_reason` columns (two small columns), so the accounting is exact by construction.
- All of it happens inside `schemas.dataset_io.dataset_dir`: a failed run leaves no final directory.
The driver never holds rows; it reads back two string columns in streaming batches.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from curate.config import CurateConfig
from curate.ppl_buckets import recorded_cutoffs
from curate.registry import STAGES, get_spec, known_types, model_identities
from curate.stage import DROP_REASON, DROP_STAGE, Stage, set_column
from curate.stage_clock import StageClock
from schemas.funnel import Funnel, StageCount
from schemas.validate import validate

log = logging.getLogger(__name__)

READ_STAGE = "read"
DEDUP_STAGE = "dedup"
DEFAULT_OUTPUT = "output/curate"
OUTPUT_COLUMN = "_output"  # partition column: "data" or "dropped"; not stored in the files
# Heavy columns that never go into the outputs.
DROP_FROM_OUTPUT = ("raw", "http_headers")
# Pipeline actors one read task (and one write task) serves; see io_task_limit.
ACTORS_PER_IO_TASK = 8
# Output block bound when a single worker reads inside its pipeline actor (~350 documents of
# the shared web crawl): the writer streams behind the actor, the actor's memory stays flat.
FUSED_BLOCK_BYTES = 4 * 2**20


# ---------------------------------------------------------------- stage construction

def run_settings(config: CurateConfig) -> dict:
    """Run-wide values some stages receive beside their own section (curate.registry)."""
    from curate.heuristics import Thresholds

    known = set(Thresholds.__dataclass_fields__)
    return {"rules": config.rules, "thresholds": config.thresholds,
            "heuristic_thresholds": {k: v for k, v in config.thresholds.items() if k in known}}


def check_stages(config: CurateConfig) -> list[tuple[str, Callable[[], Stage] | None, bool]]:
    """The enabled stages as (name, factory, needs_actor) triples in pipeline order.

    Sections were validated by parse_config without building a stage; the rules are checked
    against the columns the enabled stages declare. Nothing is built (or loaded) here.
    """
    from curate.rules import RuleSet

    settings = run_settings(config)
    plan = []
    for spec in STAGES:
        if not config.enabled(spec.key):
            continue
        section = {} if spec.key == "filter" else config.stages[spec.key]
        spec.check_files(section)
        factory = None if spec.is_global else spec.factory(section, settings)
        plan.append((spec.key, factory, spec.actor))
    if config.enabled("filter"):
        RuleSet(config.rules, config.thresholds).check_columns(produced_columns(config))
    return plan


def produced_columns(config: CurateConfig) -> set[str]:
    """Columns the enabled stages produce (what the rules may refer to)."""
    from schemas.records import DOCUMENT, RAW_PAGE

    cols = {f.name for f in DOCUMENT.required + DOCUMENT.optional + RAW_PAGE.required + RAW_PAGE.optional}
    for spec in STAGES:
        if config.enabled(spec.key):
            cols |= set(spec.label_types())
    return cols


# ---------------------------------------------------------------- batch callables

class StageChain:
    """Apply stages in order to a pyarrow batch; report each stage's seconds to the clock."""

    def __init__(self, stages: list[Stage], clock: StageClock | None = None):
        self.stages, self.clock = stages, clock

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.time()
        seconds = {}
        for stage in self.stages:
            start = time.perf_counter()
            batch = stage(batch)
            seconds[stage.name] = time.perf_counter() - start
        if self.clock is not None:
            self.clock.add(seconds, started)
        return batch


class ChainTask:
    """Task-pool callable; the stages are built lazily, once per deserialized copy."""

    def __init__(self, factories: list[Callable[[], Stage]], clock: StageClock | None = None):
        self.factories, self.clock, self.chain = factories, clock, None

    def __getstate__(self) -> dict:
        return {"factories": self.factories, "clock": self.clock}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.chain is None:
            self.chain = StageChain([f() for f in self.factories], self.clock)
        return self.chain(batch)


class ChainActor:
    """Actor-pool callable: builds the stages (and loads their models) once, in __init__."""

    def __init__(self, factories: list[Callable[[], Stage]], clock: StageClock | None = None):
        started = time.time()
        self.chain = StageChain([f() for f in factories], clock)
        if clock is not None:
            clock.built(started, time.time())

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.chain(batch)


def fill_dedup_stage(batch: pa.Table) -> pa.Table:
    """Rows the dedup stage dropped without naming a stage get drop_stage = 'dedup'."""
    if DROP_REASON not in batch.column_names or batch.num_rows == 0:
        return batch
    stage = batch.column(DROP_STAGE) if DROP_STAGE in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    missing = pc.and_(pc.is_valid(batch.column(DROP_REASON)), pc.is_null(stage))
    return set_column(batch, DROP_STAGE, pc.if_else(missing, pa.scalar(DEDUP_STAGE), stage))


def finalize_batch(batch: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """Drop heavy columns, give all-null columns a real type, check kept rows, tag the output."""
    batch = batch.drop_columns([n for n in DROP_FROM_OUTPUT if n in batch.column_names])
    for i, f in enumerate(batch.schema):
        if pa.types.is_null(f.type):
            batch = batch.set_column(i, f.name, pa.nulls(batch.num_rows, types.get(f.name, pa.string())))
    n = batch.num_rows
    for name in (DROP_REASON, DROP_STAGE):
        if name not in batch.column_names:
            batch = batch.append_column(name, pa.nulls(n, pa.string()))
    kept = pc.is_null(batch.column(DROP_REASON))
    # Kept rows are documents: a row that breaks the schema fails the job, naming row and field.
    batch = validate(batch, "document") if pc.all(kept).as_py() else _validate_kept(batch, kept)
    return batch.append_column(OUTPUT_COLUMN, pc.if_else(kept, pa.scalar("data"), pa.scalar("dropped")))


def _validate_kept(batch: pa.Table, kept) -> pa.Table:
    kept_rows = batch.filter(kept)
    if kept_rows.num_rows:
        validate(kept_rows, "document")
    return batch


def _known_types() -> dict[str, pa.DataType]:
    from schemas.records import DOCUMENT

    return {**{f.name: f.type for f in DOCUMENT.required + DOCUMENT.optional}, **known_types()}


# ---------------------------------------------------------------- accounting

def count_drops(directory: Path) -> tuple[int, dict[tuple[str, str], int]]:
    """(kept rows, {(drop_stage, drop_reason): rows}) read back from the written outputs."""
    import pyarrow.dataset as pads

    kept = 0
    data_files = sorted((directory / "data").glob("*.parquet"))
    if data_files:
        kept = pads.dataset([str(f) for f in data_files], format="parquet").count_rows()
    groups: dict[tuple[str, str], int] = defaultdict(int)
    dropped_files = sorted((directory / "dropped").glob("*.parquet"))
    if dropped_files:
        scanner = pads.dataset([str(f) for f in dropped_files], format="parquet").scanner(columns=[DROP_STAGE, DROP_REASON])
        for batch in scanner.to_batches():
            for s, r in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                groups[(s or "unknown", r)] += 1
    return kept, groups


def build_accounting(kept: int, drops: dict[tuple[str, str], int], seconds: dict[str, float],
                     stage_names: list[str]) -> list[StageCount]:
    """The funnel in pipeline order; a drop_stage the plan does not know (a name the dedup
    stage chose) is placed right after dedup, or at the end."""
    return Funnel.from_drops(kept, drops, stage_names, seconds, unplaced_after=DEDUP_STAGE).as_list()


# ---------------------------------------------------------------- the run

def build_dataset(config: CurateConfig, inputs, plan=None, clock: StageClock | None = None,
                  workers: int | None = None):
    """Lazy Ray Dataset of every input row after all enabled stages (nothing runs yet).

    `workers`: pipeline actors (default: pipeline_workers(config)); run_curate resolves it once
    and sizes its writer from the same value, so the finalize step fuses with the write."""
    import ray

    from curate.readers import read_inputs

    plan = plan or check_stages(config)
    task_cpus = config.runtime.task_cpus
    workers = workers or pipeline_workers(config)
    io_tasks = io_task_limit(workers)
    batch_size = config.runtime.batch_size
    # One worker: the read runs inside the first segment's actor (Ray Data fuses a task map into
    # the next map when their resource requests are equal). Nothing can run beside a single
    # actor anyway, and a separate read task costs a Python worker process, whose start waits
    # behind the pool's and Ray Data's own actors (Ray starts workers one at a time per CPU),
    # plus a round trip of every raw page through the object store.
    # More workers: one read task per file yields few large blocks; they are cut to
    # batch-sized blocks (streaming, no shuffle) so every actor gets work even from a single
    # WARC file. (Fused reading was measured there too: Ray then bundles batch_size file paths
    # into one actor call, so 8 files fed one of 2 actors: bench/bench_curate_throughput.py,
    # 2 workers 50 pages/s against 87 with this layout.)
    fuse_read = workers == 1 and _first_segment_needs_actor(plan)
    read_args = _segment_args(config, actor=True) if fuse_read else {"num_cpus": task_cpus}
    ds, family = read_inputs(inputs, config.read, ray_remote_args=read_args, max_tasks=io_tasks)
    if not fuse_read:
        ds = _repartition_rows(ds, batch_size, task_cpus, io_tasks)
    segment: list[tuple[str, Callable, bool]] = []

    def flush(ds):
        if not segment:
            return ds
        factories = [f for _, f, _ in segment]
        if any(actor for _, _, actor in segment):
            ds = ds.map_batches(ChainActor, fn_constructor_kwargs={"factories": factories, "clock": clock},
                                batch_size=batch_size, batch_format="pyarrow",
                                compute=ray.data.ActorPoolStrategy(size=workers), **_segment_args(config, True))
        else:
            ds = ds.map_batches(ChainTask(factories, clock), batch_size=batch_size, batch_format="pyarrow",
                                **_segment_args(config, False))
        segment.clear()
        return ds

    for name, factory, needs_actor in plan:
        if factory is None:  # a global stage (dedup, ppl_bucket, shaping): curate.registry StageSpec.run
            ds = get_spec(name).run_global(flush(ds), config.stages[name], task_cpus)
            continue
        if name == "extract" and family != "raw_page":
            continue  # documents from JSONL/Parquet have text already
        segment.append((name, factory, needs_actor))
    ds = flush(ds)
    # The same task cap as the writer's, so that Ray Data fuses the two into one task.
    ds = ds.map_batches(finalize_batch, fn_kwargs={"types": _known_types()}, batch_format="pyarrow",
                        num_cpus=task_cpus, compute=ray.data.TaskPoolStrategy(size=io_tasks))
    if fuse_read:
        # One task then reads and processes a whole file, and Ray Data hands a task's output on
        # in blocks of target_max_block_size (128 MiB by default): the writer would see nothing
        # until then and the actor would hold that much text. Smaller blocks keep it streaming.
        ds.context.target_max_block_size = min(ds.context.target_max_block_size or FUSED_BLOCK_BYTES,
                                               FUSED_BLOCK_BYTES)
    return _cap_inflight_memory(ds, config.runtime.inflight_mb_per_worker, workers), family


def pipeline_workers(config: CurateConfig) -> int:
    """Pipeline actors of a run: runtime.workers, else one per CPU of the cluster."""
    import ray

    return config.runtime.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))


def io_task_limit(workers: int) -> int:
    """Read (and write) tasks that may run at once for `workers` pipeline actors.

    One read task parses a WARC ~35x faster than an actor extracts it (1,800 pages: 1.3 s
    against ~45 s), so a few keep every actor fed. Without a cap Ray Data starts a task per
    free CPU fraction, each in a Python worker of its own whose start-up (~1.3 s of CPU:
    Ray, Ray Data, pandas, our modules) is taken from the actors: 2 workers on 8 files
    started 5 task workers where 2 do.
    """
    return max(1, math.ceil(workers / ACTORS_PER_IO_TASK))


def _first_segment_needs_actor(plan) -> bool:
    """Whether the per-row stages before the first global stage run in an actor pool."""
    for _, factory, needs_actor in plan:
        if factory is None:
            return False
        if needs_actor:
            return True
    return False


def _segment_args(config: CurateConfig, actor: bool) -> dict:
    """Ray resource arguments of a fused per-row segment (and of a read fused into it)."""
    if actor:
        # One actor per node before two on one: the model stages' CPU work spreads over
        # the cluster instead of packing the head node.
        return {"num_cpus": config.runtime.actor_cpus, "scheduling_strategy": "SPREAD"}
    return {"num_cpus": config.runtime.task_cpus}


def _cap_inflight_memory(ds, mb_per_worker: int | None, workers: int):
    """Bound the object-store memory of this dataset's in-flight blocks (its own context
    only). Ray Data then backpressures the reader once that much raw HTML waits for the
    actors; peak memory stays flat as the input grows (bench_curate_throughput.py, memory)."""
    if mb_per_worker:
        options = ds.context.execution_options
        options.resource_limits = options.resource_limits.copy(object_store_memory=mb_per_worker * 2**20 * workers)
    return ds


def _repartition_rows(ds, rows: int, num_cpus: float, max_tasks: int):
    """`ds.repartition(target_num_rows_per_block=rows)` whose tasks ask for `num_cpus` and
    run `max_tasks` at most at once, like the read tasks before it.

    The public call has neither argument: its tasks ask for a whole CPU, so on a 1-CPU cluster
    they never get one beside the actors (the job hangs), and with other resources or another
    task cap than the read's, Ray Data does not fuse it into the read (a task pool of its own,
    more worker processes). The logical operator keeps both in plain fields; set them there
    (skipped, with a warning, if a Ray release moves them).
    """
    import ray

    out = ds.repartition(target_num_rows_per_block=rows)
    op = getattr(getattr(out, "_logical_plan", None), "dag", None)
    args = getattr(op, "ray_remote_args", None)
    if isinstance(args, dict) and isinstance(getattr(op, "compute", None), ray.data.TaskPoolStrategy):
        args["num_cpus"] = num_cpus
        object.__setattr__(op, "compute", ray.data.TaskPoolStrategy(size=max_tasks))  # a frozen dataclass
    else:
        log.warning("ray.data internals changed: the repartition step asks for a whole CPU "
                    "(a 1-CPU cluster may hang; give it 2 or more CPUs)")
    return out


def _run_dedup(ds, section: dict, task_cpus: float | None = None):
    from curate.dedup import deduplicate

    return deduplicate(ds, section).map_batches(fill_dedup_stage, batch_format="pyarrow", num_cpus=task_cpus)


def prepare_embedded_ray(num_cpus: int | None = None) -> None:
    """Worker-pool setting for a Ray that this process starts itself (call before
    ray.init; does nothing when RAY_ADDRESS names a cluster to join: it keeps its own settings).

    The pipeline keeps more worker processes alive than there are CPUs: one actor per
    CPU plus read and write tasks. Ray's default soft limit on workers (the CPU count)
    makes the raylet kill the idle task workers and start new ones for the next tasks,
    each paying ~1.5 s of imports: about a tenth of a core on a 1-CPU run. On a cluster,
    set RAY_num_workers_soft_limit the same way when starting the nodes.
    """
    import os

    if os.environ.get("RAY_ADDRESS"):
        return
    cpus = num_cpus or os.cpu_count() or 1
    os.environ.setdefault("RAY_num_workers_soft_limit", str(2 * cpus + 4))


def stage_names(plan, family: str = "raw_page") -> list[str]:
    names = [READ_STAGE]
    for name, _, _ in plan:
        if name == "extract" and family != "raw_page":
            continue
        names.append(name)
    return names


def run_curate(config: CurateConfig, inputs, output_dir: str | Path, write_card: bool = True,
               release_ray: Callable[[], None] | None = None) -> dict:
    """Run the whole pipeline into `output_dir` atomically; return a short summary.

    `release_ray`, when given, is called on this thread once the run needs Ray no more (outputs
    written, counts, timings and cutoffs read back, every dataset and actor handle dropped),
    while the card is computed and drawn on another: a job that started its own Ray passes
    `ray.shutdown`, whose ~1.5 s of waiting for Ray's processes to exit then overlaps the card
    instead of following the job. Only for a Ray this process owns: a job that joined a
    cluster leaves its connection to the normal exit (see jobs/curate.py).
    """
    from concurrent.futures import ThreadPoolExecutor

    from schemas.dataset_io import dataset_dir

    plan = check_stages(config)
    started = time.time()
    t0 = time.perf_counter()
    with dataset_dir(output_dir, "document") as out:
        staging = out.root / "_staging"
        clock = StageClock(out.root / "_clock")
        workers = pipeline_workers(config)
        ds, family = build_dataset(config, inputs, plan, clock, workers=workers)
        ds.write_parquet(str(staging), partition_cols=[OUTPUT_COLUMN], concurrency=io_task_limit(workers),
                         ray_remote_args={"num_cpus": config.runtime.task_cpus})
        for part in ("data", "dropped"):
            written = staging / f"{OUTPUT_COLUMN}={part}"
            if written.is_dir():
                written.rename(out.root / part)
        shutil.rmtree(staging)
        timing = clock.read()
        shutil.rmtree(clock.directory, ignore_errors=True)
        seconds, first_batch, builds = timing.seconds, timing.first_batch, timing.builds
        kept, drops = count_drops(out.root)
        counts = build_accounting(kept, drops, seconds, stage_names(plan, family))
        run = {
            "job": "curate",
            "inputs": [str(i) for i in inputs] if isinstance(inputs, (list, tuple)) else str(inputs),
            "input_family": family,
            "started": _iso(started),
            "finished": _iso(time.time()),
            "wall_seconds": round(time.perf_counter() - t0, 3),
            # Fixed costs before any page is processed: from this process's start (imports,
            # config checks, Ray start-up, model builds, actor start-up) and from run_curate's.
            "first_batch_after_seconds": _first_batch_after(first_batch, started),
            # Of that, what the pipeline actors spent building their stages (model loads), and
            # when the last one was ready (seconds after run_curate started).
            "actor_build_seconds": round(max((end - start for start, end in builds), default=0.0), 3),
            "actors_ready_after_seconds": round(max((end for _, end in builds), default=started) - started, 3),
            # Stage seconds are measured inside the per-row stages; reading and the global
            # dedup stage run as Ray Data operators and are not timed one by one.
            "untimed_stages": [READ_STAGE] + [name for name, factory, _ in plan if factory is None],
            "models": model_identities(config.stages),  # path + sha256 of every scorer
            "config": config.raw,
        }
        if (cutoffs := recorded_cutoffs(ds)) is not None:
            run["ppl_bucket"] = cutoffs  # the head/middle/tail cutoffs per language this run used
        del ds  # no Ray object outlives the Ray it belongs to (release_ray)
        # The accounting and the card read the written files only: no Ray from here on.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raymill-card") as pool:
            finished = pool.submit(out.finish, counts, run, card=write_card, text_column="text")
            if release_ray is not None:
                release_ray()
            finished.result()  # re-raises a failure of the card here
    total = counts[0].rows_in if counts else 0
    return {"output": str(Path(output_dir).resolve()), "rows_in": total, "kept": kept, "dropped": total - kept,
            "dropped_by_stage": {c.stage: sum(c.dropped.values()) for c in counts},
            "wall_seconds": run["wall_seconds"]}


def process_started() -> float | None:
    """Wall-clock start of this process to ~10 ms; None where unknown.

    On Linux from the process's start tick and the system uptime, both counted from boot
    (psutil's create_time adds a boot time rounded to whole seconds: up to 1 s off).
    Elsewhere psutil (it comes with Ray)."""
    import os

    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - a missing timing is no reason to fail a job
        return None


def _first_batch_after(first_batch: float | None, job_started: float) -> dict[str, float] | None:
    if first_batch is None:
        return None
    out = {"job": round(first_batch - job_started, 3)}
    process = process_started()
    if process is not None:
        out["process"] = round(first_batch - process, 3)
    return out


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")
