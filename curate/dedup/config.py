"""Settings of the dedup stage, checked once up front so a typo fails before any work starts."""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import Any
from schemas.options import from_mapping

KEEP_RULES = ("longest", "earliest", "first_id")  # plus "best:<label column>"


@dataclass(frozen=True)
class DedupConfig:
    # Exact dedup: hash of lower-cased, whitespace-collapsed text.
    exact: bool = True
    strip_punctuation: bool = False  # also drop punctuation before the exact hash
    exact_url: bool = False  # rows with the same normalised URL are duplicates too
    # MinHash-LSH near dedup.
    near: bool = True
    ngram: int = 5  # words per shingle
    cjk_ngram: int = 3  # characters per shingle for CJK text
    cjk_ratio: float = 0.3  # share of CJK characters (of non-space ones) that makes a text CJK
    num_perm: int = 112
    bands: int | None = 14  # None (with rows None): chosen from `threshold`
    rows: int | None = 8
    threshold: float = 0.8  # Jaccard threshold of verification and of the band search
    verify: bool = True  # keep only candidate pairs whose true shingle Jaccard >= threshold
    seed: int = 1  # datasketch MinHash seed: same seed, same permutations
    max_bucket_pairs: int = 50  # buckets up to this size give all pairs; larger ones a star
    # Survivor of a cluster: longest | earliest | first_id | best:<column>; ties -> smallest id.
    keep: str = "longest"
    text_column: str = "text"
    # Ray: a cap on the connected-component rounds (O(log^2 n) are needed).
    max_rounds: int = 64
    # Ray: blocks of every shuffle. A sort shuffle moves blocks x blocks pieces, so many
    # small input blocks (e.g. batch-sized ones from curate) must not set it. None: the
    # cluster's CPUs, or more when the data would exceed ~128 MiB per block.
    shuffle_blocks: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"dedup config: {name}={getattr(self, name)!r} {why}")

        if not (self.exact or self.near or self.exact_url):
            raise ValueError("dedup config: exact, exact_url and near are all off; nothing to do")
        for name in ("ngram", "cjk_ngram", "num_perm", "max_bucket_pairs", "max_rounds"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        if self.shuffle_blocks is not None and (not isinstance(self.shuffle_blocks, int) or self.shuffle_blocks < 1):
            raise bad("shuffle_blocks", "must be a positive integer or null (automatic)")
        if not 0.0 < self.threshold <= 1.0:
            raise bad("threshold", "must be in (0, 1]")
        if not 0.0 < self.cjk_ratio <= 1.0:
            raise bad("cjk_ratio", "must be in (0, 1]")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("dedup config: give both bands and rows, or neither (then they are "
                             f"chosen from threshold); got bands={self.bands} rows={self.rows}")
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ValueError(f"dedup config: bands x rows = {self.bands} x {self.rows} must be positive "
                             f"and at most num_perm={self.num_perm}")
        if self.keep not in KEEP_RULES and not (self.keep.startswith("best:") and len(self.keep) > 5):
            raise bad("keep", f"must be one of {KEEP_RULES} or best:<label column>")

    @property
    def lsh_params(self) -> tuple[int, int]:
        """(bands, rows): as configured, or the datasketch optimum for `threshold`."""
        if self.bands is not None:
            return self.bands, self.rows
        return optimal_bands_rows(self.threshold, self.num_perm)

    @classmethod
    def from_any(cls, config: "DedupConfig | dict | None") -> "DedupConfig":
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if not isinstance(config, dict):
            raise TypeError(f"dedup config must be a dict or DedupConfig, not {type(config).__name__}")
        return from_mapping(cls, config, "dedup")

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["lsh_params"] = list(self.lsh_params) if self.near else None
        return out


@functools.lru_cache(maxsize=64)
def optimal_bands_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's search: minimise equal-weight false-positive + false-negative area."""
    # Private helper of datasketch 2.0.0 (lsh.py); it is what MinHashLSH(threshold=...) calls.
    from datasketch.lsh import _optimal_param

    bands, rows = _optimal_param(threshold, num_perm, 0.5, 0.5)
    return int(bands), int(rows)
