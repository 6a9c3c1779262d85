"""Exact and MinHash-LSH near-duplicate removal: labels clusters, marks duplicates as drops.

`deduplicate(ds, config)` runs on Ray Data; `deduplicate_table(table, config)` is the
same algorithm on one in-memory table, without Ray.
"""
from curate.dedup.config import DedupConfig
from curate.dedup.reference import deduplicate_table
from curate.dedup.survivor import EXACT_DUPLICATE, LABEL_COLUMNS, NEAR_DUPLICATE, STAGE, URL_DUPLICATE


def deduplicate(ds, config=None):
    """Ray Data dedup; see curate.dedup.distributed.deduplicate."""
    from curate.dedup.distributed import deduplicate as _deduplicate

    return _deduplicate(ds, config)


__all__ = ["DedupConfig", "deduplicate", "deduplicate_table", "EXACT_DUPLICATE", "NEAR_DUPLICATE",
           "URL_DUPLICATE", "LABEL_COLUMNS", "STAGE"]
