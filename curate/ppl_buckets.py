"""CCNet-style perplexity buckets: `ppl_bucket` = head / middle / tail per language.

CCNet splits each language's documents at the 30th and 60th percentile of their
perplexity (head: the third closest to the reference text). The cutoffs come from the
run's own distribution (one global pass after scoring: the driver streams back two small
columns, `lang` and `ppl`, of the rows still active and takes the exact percentiles per
language) or from a supplied table, which needs no global pass:

    ppl_bucket:
      cutoffs: {en: [350.0, 900.0], zh: [120.0, 400.0], "*": [300.0, 800.0]}

`"*"` is the cutoff pair for languages without their own; in a computed table it is
the pooled distribution, used for languages with fewer than `min_docs_per_lang` scored
documents (a percentile of five numbers says little). A row is `head` when its ppl is at
most the first cutoff, `middle` when at most the second, else `tail`; rows without a
ppl (empty, unmappable, dropped earlier) get no bucket.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    """The (lang, ppl) columns of the rows still active: all the driver reads back."""
    keep = pc.and_(active_mask(batch), pc.is_valid(batch.column("ppl"))) if "ppl" in batch.column_names else None
    if keep is None:
        return pa.table({"lang": pa.array([], pa.string()), "ppl": pa.array([], pa.float64())})
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


def bucket_dataset(ds, section: dict, task_cpus: float | None = None):
    """The global stage (curate.registry): label `ppl_bucket` on a Ray Dataset."""
    from schemas.options import from_mapping

    config = from_mapping(BucketConfig, section, "ppl_bucket")
    ds = ds.map_batches(_drop_raw, batch_format="pyarrow", num_cpus=task_cpus)
    cutoffs = dict(config.cutoffs)
    if not cutoffs:
        ds = ds.materialize()  # read twice: the distribution, then the labels
        langs, values = [], []
        pairs = ds.map_batches(_scored_rows, batch_format="pyarrow", fn_kwargs={"lang_column": config.lang_column},
                               num_cpus=task_cpus)
        for batch in pairs.iter_batches(batch_format="pyarrow", batch_size=65536):
            langs.extend(batch.column("lang").to_pylist())
            values.extend(batch.column("ppl").to_pylist())
        cutoffs = compute_cutoffs(langs, values, config.percentiles, config.min_docs_per_lang)
        log.info("ppl_bucket: cutoffs %s from %d scored documents", cutoffs, len(values))
    return ds.map_batches(_assign_active, batch_format="pyarrow", num_cpus=task_cpus,
                          fn_kwargs={"cutoffs": cutoffs, "lang_column": config.lang_column})
