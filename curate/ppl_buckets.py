"""CCNet-style perplexity buckets: `ppl_bucket` = head / middle / tail per language.

CCNet splits each language's documents at the 30th and 60th percentile of their
perplexity (head: the third closest to the reference text). The cutoffs come from the
run's own distribution (exact percentiles per language of the rows still active, taken
at execution time behind a barrier: see "the run's own cutoffs, lazily" below; the plan
stays lazy) or from a supplied table, which needs no global pass:

    ppl_bucket:
      cutoffs: {en: [350.0, 900.0], zh: [120.0, 400.0], "*": [300.0, 800.0]}

`"*"` is the cutoff pair for languages without their own; in a computed table it is
the pooled distribution, used for languages with fewer than `min_docs_per_lang` scored
documents (a percentile of five numbers says little). A row is `head` when its ppl is at
most the first cutoff, `middle` when at most the second, else `tail`; rows without a
ppl (empty, unmappable, dropped earlier) get no bucket.

The cutoffs a run used go into its accounting (`run.ppl_bucket` in accounting.json, and
the card's run metadata): `recorded_cutoffs(ds)` after the dataset ran.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.driver_actor import start_on_driver_node
from curate.stage import DROP_REASON, active_mask, set_column

log = logging.getLogger(__name__)
HEAD, MIDDLE, TAIL = "head", "middle", "tail"
POOLED = "*"
LABEL_TYPES = {"ppl_bucket": pa.string()}
# Columns only extraction reads; dropping them before the pass keeps the materialised copy small.
RAW_COLUMNS = ("raw", "http_headers")


@dataclass(frozen=True)
class BucketConfig:
    percentiles: tuple[float, float] = (30.0, 60.0)
    cutoffs: dict = field(default_factory=dict)  # {lang: [low, high]}; empty = from this run
    min_docs_per_lang: int = 20
    lang_column: str = "lang"

    def __post_init__(self) -> None:
        low, high = (list(self.percentiles) + [None, None])[:2] if isinstance(self.percentiles, (list, tuple)) else (None, None)
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and 0 < low < high < 100):
            raise ValueError(f"ppl_bucket.percentiles must be two numbers 0 < low < high < 100, got {self.percentiles!r}")
        if not isinstance(self.cutoffs, dict):
            raise ValueError(f"ppl_bucket.cutoffs must map a language to [low, high], got {self.cutoffs!r}")
        for lang, pair in self.cutoffs.items():
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair)
                    and pair[0] <= pair[1]):
                raise ValueError(f"ppl_bucket.cutoffs.{lang} must be [low, high] with low <= high, got {pair!r}")


def compute_cutoffs(langs: list[str | None], ppl: list[float], percentiles=(30.0, 60.0),
                    min_docs_per_lang: int = 20) -> dict[str, list[float]]:
    """Exact per-language percentile cutoffs, plus the pooled pair under `"*"`."""
    by_lang: dict[str, list[float]] = defaultdict(list)
    for lang, value in zip(langs, ppl):
        if value is not None:
            by_lang[lang or POOLED].append(value)
    everything = [v for values in by_lang.values() for v in values]
    if not everything:
        return {}
    table = {POOLED: [float(q) for q in np.percentile(everything, percentiles)]}
    for lang, values in by_lang.items():
        if lang != POOLED and len(values) >= min_docs_per_lang:
            table[lang] = [float(q) for q in np.percentile(values, percentiles)]
    return table


def assign_buckets(table: pa.Table, cutoffs: dict[str, list[float]], lang_column: str = "lang") -> pa.Table:
    """Add `ppl_bucket` to a batch (null where ppl is null or no cutoff applies)."""
    n = table.num_rows
    if n == 0 or "ppl" not in table.column_names or not cutoffs:
        return set_column(table, "ppl_bucket", pa.nulls(n, pa.string()))
    langs = table.column(lang_column).to_pylist() if lang_column in table.column_names else [None] * n
    pooled = cutoffs.get(POOLED)
    buckets = []
    for lang, value in zip(langs, table.column("ppl").to_pylist()):
        pair = cutoffs.get(lang, pooled) if lang is not None else pooled
        if value is None or pair is None:
            buckets.append(None)
        else:
            buckets.append(HEAD if value <= pair[0] else MIDDLE if value <= pair[1] else TAIL)
    return set_column(table, "ppl_bucket", pa.array(buckets, pa.string()))


def _scored_rows(batch: pa.Table, lang_column: str) -> pa.Table:
    """The (lang, ppl) columns of the rows still active and scored: all the recorder receives."""
    if "ppl" not in batch.column_names:
        return pa.table({"lang": pa.array([], pa.string()), "ppl": pa.array([], pa.float64())})
    keep = pc.and_(active_mask(batch), pc.is_valid(batch.column("ppl")))
    langs = batch.column(lang_column) if lang_column in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    return pa.table({"lang": pc.cast(langs, pa.string()), "ppl": pc.cast(batch.column("ppl"), pa.float64())}).filter(keep)


def _drop_raw(batch: pa.Table) -> pa.Table:
    return batch.drop_columns([c for c in RAW_COLUMNS if c in batch.column_names])


def _assign_active(batch: pa.Table, cutoffs: dict, lang_column: str) -> pa.Table:
    labeled = assign_buckets(batch, cutoffs, lang_column)
    if DROP_REASON in batch.column_names:  # rows dropped earlier keep a null bucket
        labeled = set_column(labeled, "ppl_bucket",
                             pc.if_else(active_mask(batch), labeled.column("ppl_bucket"), pa.scalar(None, pa.string())))
    return labeled


# ---------------------------------------------------------------- the run's own cutoffs, lazily
#
# The cutoffs need every scored row before any row can be labelled: a barrier. The plan
# stays lazy (nothing runs while it is built; it all runs in the job's one write):
#   1. a map sends each batch's (lang, ppl) pairs to a small recorder actor and waits for
#      the reply, so a block leaves the map only once its pairs are recorded;
#   2. `randomize_block_order` is the barrier: an all-to-all operator that emits no block
#      before it holds every block (it only reorders references: no task, no copy; Ray
#      exempts the operators that feed a materialising operator from memory backpressure);
#   3. a map after it asks the recorder for the cutoffs (computed once, from all the pairs,
#      then frozen) and labels the rows.
# The recorder keeps what was used, and the driver reads it back for the accounting
# (`recorded_cutoffs`). Row order is not part of the output (Ray Data's streaming writes
# blocks as they finish), so reordering blocks changes nothing a reader can rely on.

CONTEXT_KEY = "raymill.ppl_bucket"  # DataContext config: how the dataset's buckets were cut
MAX_BUILDS = 16  # builds a recorder remembers (plans built but never run leave an entry)
# The driver's one recorder per Ray session, held by its creating handle: an actor lives while
# that handle does (a handle looked up by name would not keep it alive).
_recorder_handle = None
_recorder_session: tuple[str, str] | None = None
_cutoffs_cache: dict[str, dict] = {}  # per worker process: frozen cutoffs of a build


class CutoffRecorder:
    """Ray actor body: the scored (lang, ppl) pairs of each build, and its cutoffs once computed."""

    def __init__(self):
        self.builds: dict[str, dict] = {}

    def open(self, build: str, percentiles: list[float], min_docs_per_lang: int) -> None:
        self.builds[build] = {"percentiles": list(percentiles), "min_docs_per_lang": min_docs_per_lang,
                              "batches": {}, "entry": None}
        while len(self.builds) > MAX_BUILDS:
            del self.builds[next(iter(self.builds))]

    def _state(self, build: str) -> dict:
        if build not in self.builds:
            raise RuntimeError(f"ppl_bucket: no record of build {build} (more than {MAX_BUILDS} plans built since)")
        return self.builds[build]

    def report(self, build: str, key: str, langs: list, values: list) -> None:
        state = self._state(build)
        if state["entry"] is None:  # after the freeze (a second execution) the pairs are not needed
            # Keyed by the batch's content: a retried task replaces its batch instead of adding it twice.
            state["batches"][key] = (langs, values)

    def cutoffs(self, build: str) -> dict:
        state = self._state(build)
        if state["entry"] is None:  # the first ask comes after the barrier: every batch is in
            langs = [lang for batch_langs, _ in state["batches"].values() for lang in batch_langs]
            values = [v for _, batch_values in state["batches"].values() for v in batch_values]
            cutoffs = compute_cutoffs(langs, values, state["percentiles"], state["min_docs_per_lang"])
            per_lang: dict[str, int] = defaultdict(int)
            for lang in langs:
                per_lang[lang or POOLED] += 1
            state["entry"] = {"source": "run", "percentiles": state["percentiles"],
                              "min_docs_per_lang": state["min_docs_per_lang"], "documents": len(values),
                              "documents_per_lang": dict(sorted(per_lang.items())), "cutoffs": cutoffs}
            state["batches"] = {}  # frozen: a second execution of the plan labels with the same cutoffs
            log.info("ppl_bucket: cutoffs %s from %d scored documents", cutoffs, len(values))
        return state["entry"]

    def record(self, build: str) -> dict | None:
        """The entry for the accounting (asked after the run: a run without rows gets its empty table)."""
        return self.cutoffs(build) if build in self.builds else None


def _recorder():
    import ray

    global _recorder_handle, _recorder_session
    context = ray.get_runtime_context()
    session = (context.get_job_id(), context.get_node_id())  # a new Ray session: a new recorder
    if _recorder_handle is None or _recorder_session != session:
        _recorder_handle, _recorder_session = start_on_driver_node(CutoffRecorder), session
    return _recorder_handle


def _batch_key(batch: pa.Table, pairs: pa.Table) -> str:
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(batch.num_rows).encode())
    for column in (["id"] if "id" in batch.column_names else []) + ["lang", "ppl"]:
        values = batch.column(column) if column == "id" else pairs.column(column)
        digest.update("\x1f".join(map(str, values.to_pylist())).encode())
    return digest.hexdigest()


def _report_scored(batch: pa.Table, recorder, build: str, lang_column: str) -> pa.Table:
    import ray

    batch = _drop_raw(batch)
    pairs = _scored_rows(batch, lang_column)
    ray.get(recorder.report.remote(build, _batch_key(batch, pairs), pairs.column("lang").to_pylist(),
                                   pairs.column("ppl").to_pylist()))
    return batch


def _assign_recorded(batch: pa.Table, recorder, build: str, lang_column: str) -> pa.Table:
    import ray

    if build not in _cutoffs_cache:
        _cutoffs_cache[build] = ray.get(recorder.cutoffs.remote(build))
    return _assign_active(batch, _cutoffs_cache[build]["cutoffs"], lang_column)


def bucket_dataset(ds, section: dict, task_cpus: float | None = None):
    """The global stage (curate.registry): label `ppl_bucket` on a Ray Dataset (lazily)."""
    import uuid

    import ray

    from schemas.options import from_mapping

    config = from_mapping(BucketConfig, section, "ppl_bucket")
    if config.cutoffs:  # a supplied table: one map, no global pass
        entry = {"source": "supplied", "cutoffs": {k: [float(v) for v in pair] for k, pair in config.cutoffs.items()}}
        ds = ds.map_batches(_drop_raw, batch_format="pyarrow", num_cpus=task_cpus)
        ds = ds.map_batches(_assign_active, batch_format="pyarrow", num_cpus=task_cpus,
                            fn_kwargs={"cutoffs": entry["cutoffs"], "lang_column": config.lang_column})
        ds.context.set_config(CONTEXT_KEY, {"entry": entry})
        return ds
    recorder, build = _recorder(), uuid.uuid4().hex
    ray.get(recorder.open.remote(build, [float(p) for p in config.percentiles], config.min_docs_per_lang))
    kwargs = {"recorder": recorder, "build": build, "lang_column": config.lang_column}
    ds = ds.map_batches(_report_scored, batch_format="pyarrow", num_cpus=task_cpus, fn_kwargs=kwargs)
    ds = _barrier(ds, task_cpus)
    ds = ds.map_batches(_assign_recorded, batch_format="pyarrow", num_cpus=task_cpus, fn_kwargs=kwargs)
    ds.context.set_config(CONTEXT_KEY, {"build": build})
    return ds


def _barrier(ds, task_cpus: float | None):
    """`ds.randomize_block_order(seed=0)`, asking for `task_cpus` like the plan's other
    operators: it runs no task, but the plan check (and Ray's accounting of the plan) reads
    the operator's ask, whose default is a whole CPU."""
    out = ds.randomize_block_order(seed=0)
    args = getattr(getattr(getattr(out, "_logical_plan", None), "dag", None), "ray_remote_args", None)
    if isinstance(args, dict) and task_cpus is not None:
        args["num_cpus"] = task_cpus
    return out


def recorded_cutoffs(ds) -> dict | None:
    """How the `ppl_bucket` labels of an executed dataset were cut, for the run's accounting:
    {"source": "run" | "supplied", "cutoffs": {lang: [low, high], "*": [...]}, ...}; None when
    the dataset has no ppl_bucket stage or has not run yet."""
    import ray

    marker = ds.context.get_config(CONTEXT_KEY)
    if marker is None:
        return None
    if "entry" in marker:
        return marker["entry"]
    return ray.get(_recorder().record.remote(marker["build"]))
