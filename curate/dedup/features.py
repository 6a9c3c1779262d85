"""Per-batch work of dedup: from document rows to the light rows the global steps shuffle.

A light row holds the id, the survivor rank, the exact keys, the LSH bucket keys and
(when verifying) the shingle hashes -- never the text, so the shuffles stay small.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.config import DedupConfig
from curate.dedup.minhash import VectorMinHasher, band_keys, shingle_hashes64, split_hashes
from curate.dedup.text import exact_key, normalize_url, shingles

LIGHT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("_rank", pa.float64()),  # smaller is better; ties go to the smaller id
    ("_exact", pa.string()),  # exact key of the normalised text
    ("_url", pa.string()),  # normalised URL (only with exact_url)
    ("_keys", pa.list_(pa.string())),  # buckets this row joins: exact, url, id and band buckets
    ("_shingles", pa.list_(pa.uint64())),  # 64-bit shingle hashes (only with verify)
])

_hashers: dict[tuple[int, int], VectorMinHasher] = {}


def hasher(config: DedupConfig) -> VectorMinHasher:
    """One hasher per (num_perm, seed) per process: the permutations are built once."""
    key = (config.num_perm, config.seed)
    if key not in _hashers:
        _hashers[key] = VectorMinHasher(config.num_perm, config.seed)
    return _hashers[key]


def rank_values(table: pa.Table, config: DedupConfig) -> np.ndarray:
    """Survivor rank per row, smaller wins: -length, fetch time, -label, or 0 (first_id)."""
    n = table.num_rows
    keep = config.keep
    if keep == "first_id":
        return np.zeros(n)
    if keep == "longest":
        lengths = pc.utf8_length(table.column(config.text_column)).to_numpy(zero_copy_only=False)
        return -lengths.astype(np.float64)
    column = "fetch_time" if keep == "earliest" else keep.split(":", 1)[1]
    if column not in table.column_names:
        raise ValueError(f"dedup keep={keep!r} needs column {column!r}, which the documents lack "
                         f"(columns: {table.column_names})")
    values = table.column(column)
    if pa.types.is_timestamp(values.type):
        values = pc.cast(pc.cast(values, pa.timestamp("us", tz=values.type.tz)), pa.int64())
    try:
        numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"dedup keep={keep!r}: column {column!r} of type {values.type} is not numeric "
                         "or a timestamp") from exc
    ranks = numbers if keep == "earliest" else -numbers
    return np.where(np.isnan(ranks), np.inf, ranks)  # rows without a value never beat rows with one


def light_rows(table: pa.Table, config: DedupConfig) -> pa.Table:
    """Light rows of active documents (the caller filters out rows dropped earlier)."""
    if "id" not in table.column_names or config.text_column not in table.column_names:
        raise ValueError(f"dedup needs columns 'id' and {config.text_column!r}; got {table.column_names}")
    ids = table.column("id").to_pylist()
    texts = table.column(config.text_column).to_pylist()
    for i, (doc_id, text) in enumerate(zip(ids, texts)):
        if doc_id is None:
            raise ValueError(f"dedup: row {i} of a batch has a null 'id'")
        if text is None:
            raise ValueError(f"dedup: document {doc_id!r} has a null {config.text_column!r}")
    exact = [exact_key(t, config.strip_punctuation) for t in texts]
    urls: list[str | None] = [None] * len(ids)
    if config.exact_url and "url" in table.column_names:
        urls = [normalize_url(u) for u in table.column("url").to_pylist()]
    keys: list[list[str]] = [[f"i:{d}"] for d in ids]  # the id bucket finds repeated ids
    if config.exact:
        for row, key in zip(keys, exact):
            row.append(f"e:{key}")
    for row, url in zip(keys, urls):
        if url is not None:
            row.append(f"u:{url}")
    shingle_lists = None
    if config.near:
        sets = [shingles(t, config.ngram, config.cjk_ngram, config.cjk_ratio)[0] for t in texts]
        flat, counts = shingle_hashes64(sets)
        signatures = hasher(config).signatures_from_hashes(flat, counts)
        bands, rows = config.lsh_params
        for row, band_row, count in zip(keys, band_keys(signatures, bands, rows), counts):
            if count:  # an empty text has no signature to compare
                row.extend(band_row)
        if config.verify:
            shingle_lists = [np.unique(h) for h in split_hashes(flat, counts)]
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "_rank": pa.array(rank_values(table, config), pa.float64()),
        "_exact": pa.array(exact, pa.string()),
        "_url": pa.array(urls, pa.string()),
        "_keys": pa.array(keys, pa.list_(pa.string())),
        "_shingles": pa.array(shingle_lists if shingle_lists is not None else [None] * len(ids),
                              pa.list_(pa.uint64())),
    }, schema=LIGHT_SCHEMA)


def bucket_rows(light: pa.Table) -> pa.Table:
    """One row (bucket, id) per bucket key of each light row: the input of the bucket shuffle."""
    lengths = pc.list_value_length(light.column("_keys")).to_numpy(zero_copy_only=False)
    ids = np.repeat(np.asarray(light.column("id").to_pylist(), dtype=object), lengths)
    return pa.table({"bucket": pc.list_flatten(light.column("_keys")),
                     "id": pa.array(ids.tolist(), pa.string())})
