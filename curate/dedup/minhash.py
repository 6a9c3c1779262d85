"""Vectorised MinHash that reproduces datasketch.MinHash (scheme "affine32") bit for bit.

datasketch hashes every shingle with sha1_hash32, pre-mixes it with the 32-bit
MurmurHash3 finalizer and applies `a * h + b mod 2^32` per permutation, one numpy
call per shingle. Here all shingles of many documents go through one matrix
operation and a segmented minimum, which is where the speed-up comes from. The
permutation parameters are taken from datasketch itself, so seeds mean the same.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np

EMPTY_VALUE = np.uint32(0xFFFFFFFF)  # datasketch's value for a MinHash that saw nothing
_CHUNK_ROWS = 1 << 15  # shingles per matrix step: bounds memory at 32k x num_perm x 4 bytes


def shingle_hashes64(shingle_sets: Sequence[Iterable[bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """All shingles of all sets hashed: (flat uint64 hashes, shingles per set).

    A hash is the first 8 bytes of SHA-1, little-endian, so its low 32 bits are
    datasketch's sha1_hash32. One join of all digests beats a Python int per shingle.
    """
    counts = np.fromiter((len(s) for s in shingle_sets), dtype=np.int64, count=len(shingle_sets))
    sha1 = hashlib.sha1
    digests = b"".join([sha1(x).digest() for s in shingle_sets for x in s])
    flat = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 20)[:, :8].copy().view("<u8").ravel()
    return flat.astype(np.uint64, copy=False), counts


def _fmix32(h: np.ndarray) -> np.ndarray:
    # MurmurHash3's 32-bit finalizer, as datasketch.minhash._fmix(width=32); uint32 wraps.
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class VectorMinHasher:
    """Signatures of many shingle sets at once; equal to datasketch.MinHash(num_perm, seed)."""

    def __init__(self, num_perm: int = 112, seed: int = 1):
        from datasketch import MinHash

        reference = MinHash(num_perm=num_perm, seed=seed)  # scheme "affine32", datasketch's default
        if reference.scheme != "affine32":  # pragma: no cover - guards a future datasketch default
            raise RuntimeError(f"datasketch default MinHash scheme is {reference.scheme!r}, expected 'affine32'")
        self.num_perm = num_perm
        self.seed = seed
        self._a = np.asarray(reference.permutations[0], dtype=np.uint32)
        self._b = np.asarray(reference.permutations[1], dtype=np.uint32)

    def signatures_from_hashes(self, flat: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(len(counts), num_perm) uint32 signatures of sets given as consecutive runs of `flat`."""
        out = np.full((len(counts), self.num_perm), EMPTY_VALUE, dtype=np.uint32)
        docs = np.flatnonzero(counts)
        if docs.size == 0:
            return out
        ends = np.cumsum(counts)
        mixed = _fmix32((flat & np.uint64(0xFFFFFFFF)).astype(np.uint32))
        starts, ends = (ends - counts)[docs], ends[docs]
        # Walk the shingles in chunks of whole documents (one document may exceed a chunk).
        first = 0
        while first < docs.size:
            last = max(int(np.searchsorted(ends, starts[first] + _CHUNK_ROWS, side="right")), first + 1)
            lo, hi = int(starts[first]), int(ends[last - 1])
            permuted = np.empty((hi - lo, self.num_perm), dtype=np.uint32)
            np.multiply(mixed[lo:hi, None], self._a[None, :], out=permuted)  # wraps mod 2^32, as datasketch
            np.add(permuted, self._b[None, :], out=permuted)
            out[docs[first:last]] = np.minimum.reduceat(permuted, starts[first:last] - lo, axis=0)
            first = last
        return out

    def signatures(self, shingle_sets: Sequence[Iterable[bytes]]) -> np.ndarray:
        return self.signatures_from_hashes(*shingle_hashes64(shingle_sets))


def split_hashes(flat: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """The flat hash array cut back into one array per set."""
    return np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> list[list[str]]:
    """Per document, one bucket key per band: the band index plus its `rows` values in hex.

    The key is the band's values themselves (no second hash), so two documents share a
    bucket exactly when they agree on the whole band.
    """
    sig = np.ascontiguousarray(signatures[:, : bands * rows]).astype(">u4")  # fixed byte order
    return [[f"b{band}:{row[band * rows:(band + 1) * rows].tobytes().hex()}" for band in range(bands)]
            for row in sig]
