"""Survivor of each duplicate cluster, and the labels and drops that follow from it."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.config import DedupConfig
from curate.dedup.text import shingle_rule
from curate.stage import DROP_REASON, DROP_STAGE, mark_drops, set_column

STAGE = "dedup"
EXACT_DUPLICATE = "exact_duplicate"  # same normalised text as the survivor
URL_DUPLICATE = "duplicate_url"  # same normalised URL as the survivor (exact_url), different text
NEAR_DUPLICATE = "near_duplicate"

# Label columns dedup adds to every row it sees (null on rows an earlier stage dropped).
LABEL_FIELDS = (
    pa.field("dup_cluster_id", pa.string()),  # id of the cluster's survivor (own id for singletons)
    pa.field("dup_cluster_size", pa.int64()),  # documents in the cluster, survivor included
    pa.field("duplicate_of", pa.string()),  # on dropped duplicates: the survivor's id
    pa.field("dup_text_rule", pa.string()),  # short/empty text rule applied while shingling
)
LABEL_COLUMNS = tuple(f.name for f in LABEL_FIELDS)
DECISION_SCHEMA = pa.schema([pa.field("id", pa.string()), *LABEL_FIELDS[:3], pa.field("_reason", pa.string())])


def cluster_decisions(members: pa.Table) -> pa.Table:
    """Decisions for the members (id, _rank, _exact, _url) of one cluster.

    The survivor is the smallest (_rank, id), so the choice depends on nothing but
    the members themselves -- not on partitioning or arrival order. Reasons read as
    if exact dedup ran first: a copy of a kept or better text is an exact duplicate;
    the best copy of each other text is a near (or URL) duplicate of the survivor.
    """
    rows = sorted(zip(members.column("_rank").to_pylist(), members.column("id").to_pylist(),
                      members.column("_exact").to_pylist(), members.column("_url").to_pylist()),
                  key=lambda r: (r[0], r[1]))
    _, survivor, _, survivor_url = rows[0]
    seen_texts: set[str] = set()
    ids, reasons = [], []
    for _, doc_id, exact, url in rows:
        ids.append(doc_id)
        if doc_id == survivor:
            reasons.append(None)
        elif exact in seen_texts:
            reasons.append(EXACT_DUPLICATE)
        elif url is not None and url == survivor_url:
            reasons.append(URL_DUPLICATE)
        else:
            reasons.append(NEAR_DUPLICATE)
        seen_texts.add(exact)
    n = len(ids)
    return pa.table({
        "id": ids,
        "dup_cluster_id": [survivor] * n,
        "dup_cluster_size": pa.array([n] * n, pa.int64()),
        "duplicate_of": [None if r is None else survivor for r in reasons],
        "_reason": pa.array(reasons, pa.string()),
    }, schema=DECISION_SCHEMA)


def finalize(rows: pa.Table, config: DedupConfig) -> pa.Table:
    """Active document rows carrying the decision columns (null: singleton) -> labeled rows.

    Singletons become clusters of one named by their own id; duplicates get their
    drop reason and drop_stage "dedup" through `mark_drops`.
    """
    n = rows.num_rows
    for f in DECISION_SCHEMA:
        if f.name not in rows.column_names:
            rows = rows.append_column(f.name, pa.nulls(n, f.type))
    ids = rows.column("id")
    rows = set_column(rows, "dup_cluster_id", pc.coalesce(pc.cast(rows.column("dup_cluster_id"), pa.string()), ids))
    rows = set_column(rows, "dup_cluster_size",
                      pc.coalesce(pc.cast(rows.column("dup_cluster_size"), pa.int64()), pa.scalar(1, pa.int64())))
    rows = set_column(rows, "duplicate_of", pc.cast(rows.column("duplicate_of"), pa.string()))
    rules = [None] * n
    if config.near:
        rules = [shingle_rule(t, config.ngram, config.cjk_ngram, config.cjk_ratio)
                 for t in rows.column(config.text_column).to_pylist()]
    rows = set_column(rows, "dup_text_rule", pa.array(rules, pa.string()))
    reason = pc.cast(rows.column("_reason"), pa.string()).combine_chunks() if n else pa.array([], pa.string())
    rows = mark_drops(rows.drop_columns(["_reason"]), pc.is_valid(reason), reason, STAGE)
    return rows


def pass_through(rows: pa.Table) -> pa.Table:
    """Rows an earlier stage dropped: untouched, plus null dedup labels so all rows share a schema."""
    for f in (pa.field(DROP_REASON, pa.string()), pa.field(DROP_STAGE, pa.string()), *LABEL_FIELDS):
        if f.name not in rows.column_names:
            rows = rows.append_column(f.name, pa.nulls(rows.num_rows, f.type))
    return rows


def duplicate_id_error(ids: list[str]) -> ValueError:
    shown = ", ".join(repr(i) for i in sorted(ids)[:5])
    more = f" (and {len(ids) - 5} more)" if len(ids) > 5 else ""
    return ValueError(f"dedup: document id {shown}{more} occurs more than once; document ids must be unique")


def is_dropped(table: pa.Table) -> pa.Array:
    if DROP_REASON not in table.column_names:
        return pa.array([False] * table.num_rows, pa.bool_())
    return pc.is_valid(table.column(DROP_REASON))
