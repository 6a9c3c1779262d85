"""Mixing several datasets by sampling weights, with an optional staged schedule.

GPT-3 style: each next record comes from source i with probability w_i (weights are
normalised; they are proportions of records, not of tokens). A source that runs out
starts a new epoch when the mix still needs it, so small high-quality sets are
upsampled and large ones subsampled. A `MixSchedule` changes the weights over the run,
e.g. add SFT or high-quality data in the last 10% of pretraining (annealing):

    MixSchedule([MixStage(until=0.9, weights={"web": 1.0}),
                 MixStage(until=1.0, weights={"web": 0.5, "sft": 0.5})])

Everything is a generator over per-source iterators: memory is the open file readers
plus the optional shuffle buffer, whatever the size of the sources; the order is a
pure function of the seed.
"""
from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

T = TypeVar("T")

STOPPING = ("first_exhausted", "all_exhausted")


@dataclass(frozen=True)
class MixStage:
    until: float  # fraction of the run (0..1] at which this stage ends
    weights: Mapping[str, float]


@dataclass(frozen=True)
class MixSchedule:
    stages: tuple[MixStage, ...]

    def __init__(self, stages: Sequence[MixStage | Mapping]):
        parsed = tuple(s if isinstance(s, MixStage) else MixStage(float(s["until"]), dict(s["weights"])) for s in stages)
        if not parsed:
            raise ValueError("a mix schedule needs at least one stage")
        ends = [s.until for s in parsed]
        if ends != sorted(ends) or not 0 < ends[0] or abs(ends[-1] - 1.0) > 1e-9:
            raise ValueError(f"stage ends must increase and the last must be 1.0, got {ends}")
        for s in parsed:
            normalize_weights(s.weights)
        object.__setattr__(self, "stages", parsed)

    @classmethod
    def constant(cls, weights: Mapping[str, float]) -> "MixSchedule":
        return cls([MixStage(1.0, dict(weights))])

    def stage_at(self, fraction: float) -> int:
        for i, s in enumerate(self.stages):
            if fraction < s.until:
                return i
        return len(self.stages) - 1

    @property
    def sources(self) -> list[str]:
        names: dict[str, None] = {}
        for s in self.stages:
            names.update(dict.fromkeys(k for k, w in s.weights.items() if w > 0))
        return list(names)


def normalize_weights(weights: Mapping[str, float]) -> dict[str, float]:
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"sampling weights must be >= 0, got {dict(weights)}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"sampling weights must not all be 0, got {dict(weights)}")
    return {k: w / total for k, w in weights.items() if w > 0}


class _Picker:
    """Draws a source name by weight from a seeded generator."""

    def __init__(self, weights: Mapping[str, float]):
        norm = normalize_weights(weights)
        self.names = list(norm)
        self.cumulative = list(itertools.accumulate(norm.values()))

    def pick(self, rng: random.Random) -> str:
        at = bisect.bisect_right(self.cumulative, rng.random() * self.cumulative[-1])
        return self.names[min(at, len(self.names) - 1)]


def interleave(sources: Mapping[str, Callable[[int], Iterable[T]]], schedule: MixSchedule | Mapping[str, float],
               seed: int, num_samples: int | None = None,
               stopping: str = "first_exhausted") -> Iterator[tuple[str, int, T]]:
    """Yield (source name, epoch, item) drawn by weight.

    `sources[name](epoch)` opens a fresh iterator over that source. With `num_samples`
    exactly that many items come out (sources restart as needed) and a staged schedule
    follows the fraction drawn so far. Without it, the mix stops when the first source
    runs out (`first_exhausted`), or once every source has run out at least once
    (`all_exhausted`, restarting the others meanwhile); staged schedules need num_samples."""
    if not isinstance(schedule, MixSchedule):
        schedule = MixSchedule.constant(schedule)
    if stopping not in STOPPING:
        raise ValueError(f"stopping must be one of {STOPPING}, got {stopping!r}")
    if num_samples is None and len(schedule.stages) > 1:
        raise ValueError("a staged mix schedule needs num_samples (the length of the run)")
    missing = [n for n in schedule.sources if n not in sources]
    if missing:
        raise ValueError(f"mix weights name unknown sources {missing}; known: {sorted(sources)}")
    rng = random.Random(seed)
    pickers = [_Picker(s.weights) for s in schedule.stages]
    epochs = {n: 0 for n in schedule.sources}
    iterators = {n: iter(sources[n](0)) for n in schedule.sources}
    exhausted: set[str] = set()
    drawn = 0
    while num_samples is None or drawn < num_samples:
        stage = schedule.stage_at(drawn / num_samples) if num_samples else 0
        name = pickers[stage].pick(rng)
        try:
            item = next(iterators[name])
        except StopIteration:
            exhausted.add(name)
            if num_samples is None and (stopping == "first_exhausted" or exhausted >= set(iterators)):
                return
            epochs[name] += 1
            iterators[name] = iter(sources[name](epochs[name]))
            try:
                item = next(iterators[name])
            except StopIteration:
                raise ValueError(f"mix source {name!r} is empty") from None
        drawn += 1
        yield name, epochs[name], item


def shuffle_buffer(items: Iterable[T], size: int, seed: int) -> Iterator[T]:
    """Approximate shuffle in bounded memory: hold `size` items, emit a random one per new item."""
    if size <= 1:
        yield from items
        return
    rng = random.Random(seed)
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        at = rng.randrange(size)
        yield buffer[at]
        buffer[at] = item
    rng.shuffle(buffer)
    yield from buffer
