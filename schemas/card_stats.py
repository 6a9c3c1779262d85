"""Streaming, mergeable column statistics for dataset cards.

Statistics are computed batch by batch so a card never holds a whole column (let
alone all text) in memory:

- count, nulls, min, max, mean and standard deviation are exact;
- quantiles come from a bounded uniform reservoir sample (`RESERVOIR_SIZE` values per
  column, Vitter's algorithm R with a fixed seed): exact while a column has at most
  that many non-null values, an unbiased estimate beyond;
- histogram counts are exact: the bin edges come from the exact min/max of a first
  pass, the counts from the reservoir when it holds every value of the column, else from
  a second pass over the same (columnar) data;
- top-k values count exactly up to `MAX_TRACKED_VALUES` distinct values; values first
  seen after that are counted together as "(untracked)".
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

RESERVOIR_SIZE = 20_000
MAX_TRACKED_VALUES = 50_000
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 30
UNTRACKED = "(untracked)"


def is_numeric(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_)


def is_categorical(type_: pa.DataType) -> bool:
    return (pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_boolean(type_)
            or pa.types.is_dictionary(type_))


class Reservoir:
    """Uniform sample of at most `size` items from a stream (algorithm R, vectorised per batch)."""

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def slots(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """For a batch of `n` new items: (positions in the batch to keep, reservoir slot for each).

        Slots are in stream order; when two items hit the same slot the later one wins,
        exactly as in the sequential algorithm.
        """
        stream_index = np.arange(self.seen, self.seen + n)
        slot = np.where(stream_index < self.size, stream_index,
                        self.rng.integers(0, np.maximum(stream_index + 1, 1)))
        keep = np.nonzero(slot < self.size)[0]
        self.seen += n
        return keep, slot[keep]


class NumericStats:
    """Exact moments and extremes plus a reservoir sample for quantiles."""

    def __init__(self, integer: bool, seed: int = 0):
        self.integer = integer
        self.count = 0
        self.nulls = 0
        self.min = math.inf
        self.max = -math.inf
        self.sum = 0.0
        self.sum_sq = 0.0
        self.nan = 0
        self.sample = np.empty(0, dtype=np.float64)
        self.reservoir = Reservoir(RESERVOIR_SIZE, seed)
        self.edges: np.ndarray | None = None
        self.hist: np.ndarray | None = None

    def update(self, values: pa.Array | pa.ChunkedArray) -> None:
        self.nulls += values.null_count
        arr = pc.drop_null(values).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        nan = np.isnan(arr)
        if nan.any():  # NaN is a value, not a null; it cannot be ordered, so it is counted apart
            self.nan += int(nan.sum())
            arr = arr[~nan]
        if arr.size == 0:
            return
        self.count += arr.size
        self.min = min(self.min, float(arr.min()))
        self.max = max(self.max, float(arr.max()))
        self.sum += float(arr.sum())
        self.sum_sq += float(np.square(arr).sum())
        keep, slots = self.reservoir.slots(arr.size)
        if self.sample.size < RESERVOIR_SIZE:
            grow = min(RESERVOIR_SIZE, self.reservoir.seen) - self.sample.size
            self.sample = np.concatenate([self.sample, np.empty(grow)])
        self.sample[slots] = arr[keep]

    def finish_first_pass(self) -> None:
        """Fix the histogram bin edges from the exact range."""
        if self.count == 0:
            self.edges, self.hist = np.empty(0), np.empty(0, dtype=np.int64)
            return
        lo, hi = self.min, self.max
        if self.integer and hi - lo < HISTOGRAM_BINS:
            edges = np.arange(lo, hi + 2) - 0.5  # one bin per integer value
        elif lo >= 1 and hi / lo >= 100:
            edges = np.geomspace(lo, hi, HISTOGRAM_BINS + 1)  # heavy tails (lengths, cluster sizes)
        elif hi == lo:
            edges = np.array([lo - 0.5, hi + 0.5])
        else:
            edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
        self.edges = edges
        self.hist = np.zeros(len(edges) - 1, dtype=np.int64)

    def update_histogram(self, values: pa.Array | pa.ChunkedArray) -> None:
        arr = pc.drop_null(values).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        arr = arr[~np.isnan(arr)]
        if arr.size and self.hist is not None and self.hist.size:
            # np.histogram includes the right edge in the last bin, so max is always counted.
            self.hist += np.histogram(arr, bins=self.edges)[0]

    def histogram_from_sample(self) -> bool:
        """Fill the histogram from the reservoir when it holds every value; False if it cannot.

        Up to RESERVOIR_SIZE values the sample is the whole column (in another order, which
        a histogram does not see), so the counts equal a second pass's exactly and the
        second pass over the data is skipped for this column.
        """
        if self.hist is None or not self.exact_quantiles:
            return False
        if self.count and self.hist.size:
            self.hist += np.histogram(self.sample[:self.count], bins=self.edges)[0]
        return True

    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def std(self) -> float | None:
        if not self.count:
            return None
        m = self.sum / self.count
        return math.sqrt(max(self.sum_sq / self.count - m * m, 0.0))

    def quantiles(self) -> list[float | None]:
        if self.count == 0:
            return [None] * len(QUANTILES)
        return [float(q) for q in np.quantile(self.sample, QUANTILES)]

    @property
    def exact_quantiles(self) -> bool:
        return self.count <= RESERVOIR_SIZE


class CategoricalStats:
    """Exact value counts up to MAX_TRACKED_VALUES distinct values."""

    def __init__(self):
        self.count = 0
        self.nulls = 0
        self.counts: Counter = Counter()
        self.untracked = 0

    def update(self, values: pa.Array | pa.ChunkedArray) -> None:
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        self.nulls += values.null_count
        self.count += len(values) - values.null_count
        for item in pc.value_counts(pc.drop_null(values)).to_pylist():
            key, n = str(item["values"]), item["counts"]
            if key in self.counts or len(self.counts) < MAX_TRACKED_VALUES:
                self.counts[key] += n
            else:
                self.untracked += n

    def top(self, k: int) -> list[tuple[str, int]]:
        items = self.counts.most_common(k)
        if self.untracked:
            items.append((UNTRACKED, self.untracked))
        return items


@dataclass
class ColumnStats:
    """Statistics of one column (a label, or a derived length) within one split."""

    split: str
    column: str
    source: str  # "label" for a dataset column, "derived" for computed lengths and counts
    numeric: NumericStats | None = None
    categorical: CategoricalStats | None = None
    extra: dict = field(default_factory=dict)
