"""Dedup of one in-memory table without Ray: the reference the distributed path must match.

It runs the same row-level functions (features, bucket edges, verification,
survivor choice) and a plain union-find in place of the distributed rounds, so
tests can check the algorithm on small inputs and compare the Ray path against it.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.candidates import BAND, DUP_ID, bucket_edges, jaccard
from curate.dedup.components import components
from curate.dedup.config import DedupConfig
from curate.dedup.features import light_rows
from curate.dedup.survivor import (DECISION_SCHEMA, LABEL_COLUMNS, cluster_decisions, duplicate_id_error,
                                   finalize, is_dropped, pass_through)


def candidate_edges(light: pa.Table, config: DedupConfig) -> list[tuple[str, str]]:
    """Edges of the duplicate graph: exact/URL stars plus (verified) band pairs."""
    buckets: dict[str, list[str]] = defaultdict(list)
    for doc_id, keys in zip(light.column("id").to_pylist(), light.column("_keys").to_pylist()):
        for key in keys:
            buckets[key].append(doc_id)
    edges, repeated = set(), []
    for key, ids in buckets.items():
        for a, b, kind in bucket_edges(key, ids, config.max_bucket_pairs):
            if kind == DUP_ID:
                repeated.append(a)
            elif kind == BAND and config.verify:
                edges.add((a, b, BAND))
            else:
                edges.add((a, b, "pass"))
    if repeated:
        raise duplicate_id_error(repeated)
    if config.verify:
        shingles = {d: np.asarray(s, np.uint64) for d, s in
                    zip(light.column("id").to_pylist(), light.column("_shingles").to_pylist())}
        edges = {(a, b, k) for a, b, k in edges
                 if k != BAND or jaccard(shingles[a], shingles[b]) >= config.threshold}
    return sorted({(a, b) for a, b, _ in edges})


def deduplicate_table(table: pa.Table, config: DedupConfig | dict | None = None) -> pa.Table:
    """Label and mark duplicates in `table`; rows dropped earlier pass through. No Ray."""
    config = DedupConfig.from_any(config)
    dropped = is_dropped(table)
    active = table.filter(pc.invert(dropped))
    done = table.filter(dropped)
    active = active.drop_columns([c for c in LABEL_COLUMNS if c in active.column_names])
    light = light_rows(active, config)
    roots = components(candidate_edges(light, config))
    clusters: dict[str, list[int]] = defaultdict(list)
    for i, doc_id in enumerate(light.column("id").to_pylist()):
        if doc_id in roots:
            clusters[roots[doc_id]].append(i)
    decided = [cluster_decisions(light.take(rows)) for rows in clusters.values()]
    decisions = pa.concat_tables(decided) if decided else DECISION_SCHEMA.empty_table()
    by_id = {d: i for i, d in enumerate(decisions.column("id").to_pylist())}
    index = pa.array([by_id.get(d) for d in active.column("id").to_pylist()], pa.int64())
    for name in DECISION_SCHEMA.names[1:]:
        active = active.append_column(name, decisions.column(name).take(index))
    out = finalize(active, config)
    if done.num_rows:
        out = pa.concat_tables([out, pass_through(done)], promote_options="permissive")
    return out
