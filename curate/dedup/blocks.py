"""Block-level bodies of the distributed steps.

Each global step sorts its rows by a key (Ray Data's sort shuffle puts all rows of
one key into one block, in order) and then runs one of these functions on whole
blocks: it walks the key runs of the block in Python lists, which costs far less
than one Arrow table per group. Two-sided steps ("co-groups", i.e. joins) first
bring both sides to one schema with a `_k` key column, then sort their union.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.candidates import EDGE_SCHEMA, bucket_edges, edges_table, jaccard
from curate.dedup.components import EDGE, STAR_SCHEMA, large_star, pairs_table, small_star
from curate.dedup.survivor import DECISION_SCHEMA, cluster_decisions

SHINGLE_COGROUP = pa.schema([("_k", pa.string()), ("_o", pa.string()), ("kind", pa.string()),
                             ("_sa", pa.list_(pa.uint64())), ("_sh", pa.list_(pa.uint64()))])
MEMBER_COGROUP = pa.schema([("_k", pa.string()), ("root", pa.string()), ("_rank", pa.float64()),
                            ("_exact", pa.string()), ("_url", pa.string())])
MEMBER_SCHEMA = pa.schema([("root", pa.string()), ("id", pa.string()), ("_rank", pa.float64()),
                           ("_exact", pa.string()), ("_url", pa.string())])


def runs(keys: list) -> Iterator[tuple[int, int]]:
    """(start, end) of each run of equal keys in a sorted list."""
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            yield start, i
            start = i


def bucket_block(block: pa.Table, max_pairs_size: int) -> pa.Table:
    """Sorted (bucket, id) rows -> edges and repeated-id reports."""
    buckets, ids = block.column("bucket").to_pylist(), block.column("id").to_pylist()
    edges = []
    for s, e in runs(buckets):
        if e - s > 1:
            edges.extend(bucket_edges(buckets[s], ids[s:e], max_pairs_size))
    return edges_table(edges)


# --- verification: attach the shingles of a, then of b, then check Jaccard ----------------------

def edge_side(edges: pa.Table) -> pa.Table:
    n = edges.num_rows
    return pa.table({"_k": edges.column("a"), "_o": edges.column("b"), "kind": edges.column("kind"),
                     "_sa": pa.nulls(n, pa.list_(pa.uint64())), "_sh": pa.nulls(n, pa.list_(pa.uint64()))},
                    schema=SHINGLE_COGROUP)


def shingle_side(light: pa.Table) -> pa.Table:
    n = light.num_rows
    return pa.table({"_k": light.column("id"), "_o": pa.nulls(n, pa.string()), "kind": pa.nulls(n, pa.string()),
                     "_sa": pa.nulls(n, pa.list_(pa.uint64())), "_sh": light.column("_shingles")},
                    schema=SHINGLE_COGROUP)


def attach_a_block(block: pa.Table) -> pa.Table:
    """Per a: its shingles onto each distinct edge (a, b); re-keyed by b for the second pass."""
    keys, others, kinds = (block.column(c).to_pylist() for c in ("_k", "_o", "kind"))
    shingles = block.column("_sh")
    out_k, out_o, out_kind, out_sa = [], [], [], []
    for s, e in runs(keys):
        own = next((i for i in range(s, e) if others[i] is None), None)
        if own is None:
            continue
        for b in sorted({others[i] for i in range(s, e) if others[i] is not None}):
            out_k.append(b), out_o.append(keys[s]), out_kind.append(kinds[s]), out_sa.append(own)
    sa = shingles.take(pa.array(out_sa, pa.int64())) if out_sa else pa.array([], pa.list_(pa.uint64()))
    n = len(out_k)
    return pa.table({"_k": out_k, "_o": out_o, "kind": out_kind, "_sa": sa,
                     "_sh": pa.nulls(n, pa.list_(pa.uint64()))}, schema=SHINGLE_COGROUP)


def _list_arrays(column: pa.ChunkedArray) -> list[np.ndarray | None]:
    arr = column.combine_chunks()
    values = arr.values.to_numpy(zero_copy_only=False)
    offsets = arr.offsets.to_numpy()
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    return [values[offsets[i]:offsets[i + 1]] if valid[i] else None for i in range(len(arr))]


def verify_b_block(block: pa.Table, threshold: float) -> pa.Table:
    """Per b: true Jaccard of each (a, b) pair; keep the pairs at or above `threshold`."""
    keys, others = block.column("_k").to_pylist(), block.column("_o").to_pylist()
    sa, sh = _list_arrays(block.column("_sa")), _list_arrays(block.column("_sh"))
    edges = []
    for s, e in runs(keys):
        own = next((sh[i] for i in range(s, e) if others[i] is None), None)
        if own is None:
            continue
        edges.extend((others[i], keys[i], "band") for i in range(s, e)
                     if others[i] is not None and jaccard(sa[i], own) >= threshold)
    return edges_table(edges) if edges else EDGE_SCHEMA.empty_table()


# --- connected components ------------------------------------------------------------------------

def large_star_block(block: pa.Table) -> pa.Table:
    us, vs = block.column("u").to_pylist(), block.column("v").to_pylist()
    rows = [row for s, e in runs(us) for row in large_star(us[s], vs[s:e])]
    if not rows:
        return STAR_SCHEMA.empty_table()
    a, b, tag = zip(*rows)
    return pa.table({"a": list(a), "b": list(b), "tag": list(tag)}, schema=STAR_SCHEMA)


def small_star_block(block: pa.Table) -> pa.Table:
    bs, as_ = block.column("b").to_pylist(), block.column("a").to_pylist()
    return pairs_table([pair for s, e in runs(bs) for pair in small_star(bs[s], as_[s:e])])


def keep_edges(block: pa.Table) -> pa.Table:
    return block.filter(pc.equal(block.column("tag"), pa.scalar(EDGE, pa.int8()))).select(["a", "b"])


# --- members of each cluster, then the survivor decisions ---------------------------------------

def label_side(labels: pa.Table) -> pa.Table:
    n = labels.num_rows
    return pa.table({"_k": labels.column("node"), "root": labels.column("root"),
                     "_rank": pa.nulls(n, pa.float64()), "_exact": pa.nulls(n, pa.string()),
                     "_url": pa.nulls(n, pa.string())}, schema=MEMBER_COGROUP)


def light_side(light: pa.Table) -> pa.Table:
    return pa.table({"_k": light.column("id"), "root": pa.nulls(light.num_rows, pa.string()),
                     "_rank": light.column("_rank"), "_exact": light.column("_exact"),
                     "_url": light.column("_url")}, schema=MEMBER_COGROUP)


def member_block(block: pa.Table) -> pa.Table:
    """Per node: its root (if it is in the graph) with its rank fields."""
    keys, roots = block.column("_k").to_pylist(), block.column("root").to_pylist()
    take_label, take_light = [], []
    for s, e in runs(keys):
        label = next((i for i in range(s, e) if roots[i] is not None), None)
        light = next((i for i in range(s, e) if roots[i] is None), None)
        if label is not None and light is not None:
            take_label.append(label), take_light.append(light)
    lab, lig = pa.array(take_label, pa.int64()), pa.array(take_light, pa.int64())
    return pa.table({"root": block.column("root").take(lab), "id": block.column("_k").take(lig),
                     "_rank": block.column("_rank").take(lig), "_exact": block.column("_exact").take(lig),
                     "_url": block.column("_url").take(lig)}, schema=MEMBER_SCHEMA)


def decision_block(block: pa.Table) -> pa.Table:
    roots = block.column("root").to_pylist()
    parts = [cluster_decisions(block.slice(s, e - s)) for s, e in runs(roots)]
    return pa.concat_tables(parts) if parts else DECISION_SCHEMA.empty_table()
