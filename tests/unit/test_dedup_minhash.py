"""The vectorised MinHash must give exactly datasketch.MinHash's signatures."""
from __future__ import annotations

import json

import numpy as np
import pytest
from datasketch import MinHash

from curate.dedup.minhash import VectorMinHasher, band_keys, shingle_hashes64
from curate.dedup.text import shingles

TEXTS = [
    "Ray Data streams blocks between operators, so a pipeline larger than memory still runs. "
    "Each block is an Arrow table; map_batches applies a function to every block in parallel.",
    "MinHash estimates the Jaccard similarity of two sets from the minimum hash values under "
    "random permutations; locality-sensitive hashing then groups signatures into bands.",
    "数据去重是构建大规模语言模型预训练语料的重要步骤，近似重复的网页会降低模型质量。",
    "short text",
    "",
]


def datasketch_signature(shingle_set, num_perm: int, seed: int) -> np.ndarray:
    m = MinHash(num_perm=num_perm, seed=seed)
    for s in shingle_set:
        m.update(s)
    return m.hashvalues


@pytest.mark.parametrize("num_perm,seed", [(112, 1), (128, 7), (16, 42)])
def test_signatures_equal_datasketch(num_perm, seed):
    sets = [shingles(t, 5, 3, 0.3)[0] for t in TEXTS]
    ours = VectorMinHasher(num_perm, seed).signatures(sets)
    expected = np.array([datasketch_signature(s, num_perm, seed) for s in sets])
    assert ours.dtype == expected.dtype == np.uint32
    np.testing.assert_array_equal(ours, expected)


def test_signatures_equal_datasketch_on_real_articles(shared_data):
    articles = json.loads((shared_data / "web" / "ground-truth.json").read_text(encoding="utf-8"))
    texts = [a["articleBody"] for a in list(articles.values())[:25]]
    sets = [shingles(t, 5, 3, 0.3)[0] for t in texts]
    assert sum(map(len, sets)) > 5000  # enough shingles to cross the internal chunking
    np.testing.assert_array_equal(VectorMinHasher(112, 1).signatures(sets),
                                  np.array([datasketch_signature(s, 112, 1) for s in sets]))


def test_chunking_over_large_document_matches():
    # One set far larger than a chunk, between two small ones.
    big = {f"token {i} x".encode() for i in range(40000)}
    sets = [{b"a b"}, big, {b"c d", b"e f"}]
    np.testing.assert_array_equal(VectorMinHasher(32, 3).signatures(sets),
                                  np.array([datasketch_signature(s, 32, 3) for s in sets]))


def test_hash_low_bits_are_datasketch_sha1_hash32():
    from datasketch.hashfunc import sha1_hash32

    flat, counts = shingle_hashes64([{b"alpha", b"beta"}, set(), {b"gamma"}])
    assert counts.tolist() == [2, 0, 1]
    assert sorted(int(h) & 0xFFFFFFFF for h in flat) == sorted(sha1_hash32(x) for x in (b"alpha", b"beta", b"gamma"))


def test_band_keys_agree_exactly_on_bands():
    sig = np.array([[1, 2, 3, 4], [1, 2, 9, 4], [7, 2, 3, 4]], dtype=np.uint32)
    keys = band_keys(sig, bands=2, rows=2)
    assert keys[0][0] == keys[1][0] != keys[2][0]
    assert keys[0][1] == keys[2][1] != keys[1][1]
    assert all(k.startswith("b0:") for k in (keys[0][0], keys[2][0]))
