"""Mixing: weights respected within sampling error, staged schedules, determinism, bounded buffers."""
from __future__ import annotations

import math
import tracemalloc
from collections import Counter

import pytest

from train.mixing import MixSchedule, MixStage, interleave, normalize_weights, shuffle_buffer


def _source(name: str, n: int):
    def open_epoch(epoch: int):
        return (f"{name}-{epoch}-{i}" for i in range(n))
    return open_epoch


def test_weights_respected_within_sampling_error():
    sources = {"web": _source("web", 100_000), "code": _source("code", 50), "books": _source("books", 1000)}
    weights = {"web": 0.6, "code": 0.1, "books": 0.3}
    n = 20_000
    counts = Counter(name for name, _, _ in interleave(sources, weights, seed=3, num_samples=n))
    assert sum(counts.values()) == n
    for name, w in weights.items():
        sigma = math.sqrt(n * w * (1 - w))
        assert abs(counts[name] - n * w) < 4 * sigma, (name, counts[name])


def test_small_sources_are_upsampled_by_epochs():
    out = list(interleave({"a": _source("a", 10), "b": _source("b", 1000)}, {"a": 0.5, "b": 0.5}, seed=0,
                          num_samples=400))
    epochs_a = {e for name, e, _ in out if name == "a"}
    assert max(epochs_a) >= 15  # ~200 draws from 10 rows
    items_a = [item for name, e, item in out if name == "a" and e == 0]
    assert items_a == [f"a-0-{i}" for i in range(10)]  # within an epoch, source order is kept


def test_deterministic_given_seed():
    sources = {"a": _source("a", 100), "b": _source("b", 100)}
    one = list(interleave(sources, {"a": 1, "b": 2}, seed=11))
    two = list(interleave(sources, {"a": 1, "b": 2}, seed=11))
    three = list(interleave(sources, {"a": 1, "b": 2}, seed=12))
    assert one == two and one != three


def test_stopping_strategies():
    sources = {"a": _source("a", 10), "b": _source("b", 1000)}
    first = list(interleave(sources, {"a": 1, "b": 1}, seed=0))
    assert Counter(n for n, _, _ in first)["a"] == 10 and len(first) < 60
    every = list(interleave(sources, {"a": 1, "b": 1}, seed=0, stopping="all_exhausted"))
    assert Counter(n for n, _, _ in every)["b"] == 1000


def test_staged_schedule_anneals_in_the_final_fraction():
    schedule = MixSchedule([MixStage(0.8, {"web": 1.0}), {"until": 1.0, "weights": {"web": 0.5, "sft": 0.5}}])
    sources = {"web": _source("web", 10_000), "sft": _source("sft", 100)}
    out = [name for name, _, _ in interleave(sources, schedule, seed=1, num_samples=1000)]
    assert "sft" not in out[:800]
    assert 0.35 < out[800:].count("sft") / 200 < 0.65
    with pytest.raises(ValueError, match="num_samples"):
        list(interleave(sources, schedule, seed=1))


def test_bad_weights_and_schedules():
    with pytest.raises(ValueError):
        normalize_weights({"a": -1, "b": 2})
    with pytest.raises(ValueError):
        normalize_weights({"a": 0})
    with pytest.raises(ValueError, match="last must be 1.0"):
        MixSchedule([MixStage(0.5, {"a": 1})])
    with pytest.raises(ValueError, match="unknown sources"):
        list(interleave({"a": _source("a", 3)}, {"a": 1, "zzz": 1}, seed=0))


def test_shuffle_buffer_is_a_permutation_and_memory_is_bounded():
    items = list(range(1000))
    shuffled = list(shuffle_buffer(iter(items), 100, seed=0))
    assert sorted(shuffled) == items and shuffled != items
    assert shuffled == list(shuffle_buffer(iter(items), 100, seed=0))

    def peak(n: int) -> int:
        tracemalloc.start()
        for _ in shuffle_buffer((("x" * 200) + str(i) for i in range(n)), 200, seed=0):
            pass
        value = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return value

    # Ten times more input than the buffer holds, and ten times more again: peak memory stays flat.
    assert peak(20_000) < 1.5 * peak(2_000)
