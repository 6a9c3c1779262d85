"""From the rows of one bucket to graph edges, and the true-Jaccard check of candidate pairs."""
from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa

EDGE_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string()), ("kind", pa.string())])
# Edge kinds: "exact" (same text or URL key: no check needed), "band" (LSH candidate),
# and "dup_id" rows, which are no edge but a report that an id occurs more than once.
EXACT, BAND, DUP_ID = "exact", "band", "dup_id"


def bucket_edges(bucket: str, ids: list[str], max_pairs_size: int) -> list[tuple[str, str | None, str]]:
    """Edges (a < b) among the ids that share `bucket`; order of `ids` does not matter.

    Exact buckets give a star to the smallest id (enough for components). Band buckets
    give every pair up to `max_pairs_size` members, so a pair that fails verification
    does not cut off members that pass with another one; bigger buckets give a star.
    """
    members = sorted(set(ids))
    if bucket.startswith("i:"):
        return [(bucket[2:], None, DUP_ID)] if len(ids) > 1 else []
    if len(members) < 2:
        return []
    if bucket.startswith(("e:", "u:")):
        return [(members[0], m, EXACT) for m in members[1:]]
    if len(members) <= max_pairs_size:
        return [(a, b, BAND) for a, b in itertools.combinations(members, 2)]
    return [(members[0], m, BAND) for m in members[1:]]


def edges_table(edges: list[tuple[str, str | None, str]]) -> pa.Table:
    if not edges:
        return EDGE_SCHEMA.empty_table()
    a, b, kind = zip(*edges)
    return pa.table({"a": list(a), "b": list(b), "kind": list(kind)}, schema=EDGE_SCHEMA)


def jaccard(x: np.ndarray, y: np.ndarray) -> float:
    """Jaccard of two sorted unique hash arrays; two empty sets count as different."""
    if len(x) == 0 or len(y) == 0:
        return 0.0
    inter = len(np.intersect1d(x, y, assume_unique=True))
    return inter / (len(x) + len(y) - inter)
