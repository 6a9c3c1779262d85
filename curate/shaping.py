"""Label-driven shaping of the kept set (seed 001 §3.2.2): rebalance, truncate, order.

Off by default; a `shaping:` section switches it on. It runs last, over rows that passed
the rules and dedup, so the shares it sets are shares of the final output.

- `caps: {lang: {en: 1000}}`: at most that many kept rows per value of a label column.
- `max_share: {topic: {sport: 0.2}}`: a value may make up at most that share of the kept
  rows (solved against the other values' kept counts).
  The rows kept within a capped value are the highest by `prefer` (a score column, e.g.
  `quality_score`), ties and the no-`prefer` case broken by a hash of the id (a
  deterministic uniform sample). The rest are dropped with reason
  `shaping_cap:<column>=<value>`, so the funnel counts every one. Caps on several columns
  are computed from the same rows, independently.
- `max_chars`: longer texts are cut at the last line break (else space) before the cap;
  `truncated_from_chars` keeps the original length (null when not cut).
- `order_by` (+ `descending`): the output sorted by a label, e.g. quality_score.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from curate.stage import active_mask, mark_drops, set_column

STAGE = "shaping"
LABEL_TYPES = {"truncated_from_chars": pa.int64()}
CAP_REASON = "shaping_cap"


@dataclass(frozen=True)
class ShapingConfig:
    caps: dict = field(default_factory=dict)  # {column: {value: max rows}}
    max_share: dict = field(default_factory=dict)  # {column: {value: share in (0, 1)}}
    prefer: str | None = None  # score column: keep the highest-scoring rows of a capped value
    max_chars: int | None = None
    order_by: str | None = None
    descending: bool = True
    text_column: str = "text"

    def __post_init__(self) -> None:
        for name, limits in (("caps", self.caps), ("max_share", self.max_share)):
            if not isinstance(limits, dict) or not all(isinstance(v, dict) for v in limits.values()):
                raise ValueError(f"shaping.{name} must map a column to {{value: limit}}, got {limits!r}")
            for column, per_value in limits.items():
                for value, limit in per_value.items():
                    ok = (isinstance(limit, int) and limit >= 0) if name == "caps" else \
                        (isinstance(limit, (int, float)) and 0 < limit < 1)
                    if isinstance(limit, bool) or not ok:
                        raise ValueError(f"shaping.{name}.{column}.{value} must be "
                                         f"{'a row count >= 0' if name == 'caps' else 'a share in (0, 1)'}, got {limit!r}")
        if self.max_chars is not None and (not isinstance(self.max_chars, int) or self.max_chars < 1):
            raise ValueError(f"shaping.max_chars must be a positive integer or null, got {self.max_chars!r}")


def truncate_text(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    cut = max(head.rfind("\n"), head.rfind(" "))
    return head[:cut].rstrip() if cut > max_chars // 2 else head


def kept_counts(counts: dict[str, int], caps: dict, shares: dict) -> dict[str, int]:
    """Rows to keep per value: under its cap, and under its share of the kept total."""
    keep = {v: min(n, caps.get(v, n)) for v, n in counts.items()}
    for _ in range(20):  # a few rounds settle it: lowering one value lowers the others' room
        changed = False
        for value, share in shares.items():
            if value not in keep:
                continue
            others = sum(n for v, n in keep.items() if v != value)
            room = int(share * others / (1 - share))
            if keep[value] > room:
                keep[value], changed = room, True
        if not changed:
            break
    return keep


def _tie(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(str(doc_id).encode(), digest_size=7).digest(), "big")


def _rank_rows(batch: pa.Table, columns: list[str], prefer: str | None) -> pa.Table:
    active = batch.filter(active_mask(batch))
    n = active.num_rows
    scores = pc.fill_null(pc.cast(active.column(prefer), pa.float64()), float("-inf")) if prefer else pa.array([0.0] * n)
    out = {c: pc.cast(active.column(c), pa.string()) for c in columns}
    out["_score"] = scores
    out["_tie"] = pa.array([_tie(d) for d in active.column("id").to_pylist()], pa.int64())
    return pa.table(out)


def cap_thresholds(rows: pa.Table, config: ShapingConfig) -> dict[str, dict[str, tuple[float, int]]]:
    """{column: {value: (score, tie)}}: a row of that value is kept when its (score, tie) is at least this."""
    thresholds: dict[str, dict[str, tuple[float, int]]] = {}
    for column in sorted({*config.caps, *config.max_share}):
        ranked: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for value, score, tie in zip(rows.column(column).to_pylist(), rows.column("_score").to_pylist(),
                                     rows.column("_tie").to_pylist()):
            ranked[value].append((score, tie))
        caps = {str(k): v for k, v in (config.caps.get(column) or {}).items()}
        shares = {str(k): v for k, v in (config.max_share.get(column) or {}).items()}
        keep = kept_counts({v: len(r) for v, r in ranked.items() if v is not None}, caps, shares)
        thresholds[column] = {}
        for value, k in keep.items():
            if k < len(ranked[value]):
                ordered = sorted(ranked[value], reverse=True)
                thresholds[column][value] = ordered[k - 1] if k else (float("inf"), 0)
    return thresholds


def _apply_caps(batch: pa.Table, thresholds: dict, prefer: str | None) -> pa.Table:
    n = batch.num_rows
    if n == 0:
        return batch
    active = active_mask(batch).to_pylist()
    scores = pc.fill_null(pc.cast(batch.column(prefer), pa.float64()), float("-inf")).to_pylist() if prefer else [0.0] * n
    ties = [_tie(d) for d in batch.column("id").to_pylist()]
    reasons: list[str | None] = [None] * n
    for column, limits in thresholds.items():
        values = pc.cast(batch.column(column), pa.string()).to_pylist()
        for i, value in enumerate(values):
            if reasons[i] is None and active[i] and value in limits and (scores[i], ties[i]) < limits[value]:
                reasons[i] = f"{CAP_REASON}:{column}={value}"
    return mark_drops(batch, [r is not None for r in reasons], reasons, STAGE)


def _truncate(batch: pa.Table, max_chars: int, text_column: str) -> pa.Table:
    texts = batch.column(text_column).to_pylist()
    active = active_mask(batch).to_pylist()
    new_texts, original = [], []
    for text, is_active in zip(texts, active):
        if is_active and text is not None and len(text) > max_chars:
            new_texts.append(truncate_text(text, max_chars))
            original.append(len(text))
        else:
            new_texts.append(text)
            original.append(None)
    batch = set_column(batch, text_column, pa.array(new_texts, pa.string()))
    return set_column(batch, "truncated_from_chars", pa.array(original, pa.int64()))


def shape_dataset(ds, section: dict, task_cpus: float | None = None):
    """The global stage (curate.registry)."""
    from schemas.options import from_mapping

    config = from_mapping(ShapingConfig, section, STAGE)
    kwargs = {"batch_format": "pyarrow", "num_cpus": task_cpus}
    if config.max_chars:
        ds = ds.map_batches(_truncate, fn_kwargs={"max_chars": config.max_chars, "text_column": config.text_column},
                            **kwargs)
    columns = sorted({*config.caps, *config.max_share})
    if columns:
        ds = ds.materialize()  # read twice: the counts, then the drops
        ranked = ds.map_batches(_rank_rows, fn_kwargs={"columns": columns, "prefer": config.prefer}, **kwargs)
        batches = list(ranked.iter_batches(batch_format="pyarrow", batch_size=65536))
        if batches:
            thresholds = cap_thresholds(pa.concat_tables(batches), config)
            ds = ds.map_batches(_apply_caps, fn_kwargs={"thresholds": thresholds, "prefer": config.prefer}, **kwargs)
    if config.order_by:
        ds = ds.sort(config.order_by, descending=config.descending)
    return ds
