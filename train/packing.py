"""Packing: many examples into few fixed-capacity sequences, streaming, in bounded memory.

- Pretraining: `BlockChunker` concatenates documents (each already ends with EOS) and
  cuts fixed-size blocks.
- SFT / RM / DPO: `best_fit_decreasing` bin-packs whole examples into sequences of at
  most `capacity` tokens; `BinPacker` does it over a stream with a bounded window. An
  example is never split across packs.

A pack is a row {input_ids, labels, position_ids, ...}: position_ids restart at 0 for each
example, which is what lets attention kernels (flash-attn varlen, SDPA with transformers'
packed-sequence detection) keep examples apart. The label of each example's first token
is -100: a causal LM's loss at position t targets label t+1, so this removes the only
target that would cross from one example into the next.

Lineage: given each example's source id, a pack also carries `spans`, one `Span` per piece
of a source document it holds (an SFT example is one whole piece; a pretraining document
cut by a block boundary is a piece in each block it reaches). The training card's lineage
table is made of them (train.lineage).
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple, Sequence

from train.tokenize import IGNORE_INDEX


@dataclass
class PackedExample:
    """What the packer needs of an encoded example (EncodedExample fits too)."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


class Span(NamedTuple):
    """One source document's piece of a packed sequence."""

    doc_id: str
    start: int  # position of its first token in the sequence
    length: int  # tokens
    doc_offset: int = 0  # position of its first token in the document (> 0: the rest of a cut document)


def example_spans(doc_ids: Sequence[str], lengths: Sequence[int]) -> list[Span]:
    """Spans of whole examples laid end to end, as make_pack lays them."""
    spans, at = [], 0
    for doc_id, n in zip(doc_ids, lengths):
        spans.append(Span(doc_id, at, n))
        at += n
    return spans


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins of item indices: longest first, each into the fullest bin it still fits.

    Deterministic (ties by index); bins are returned in order of creation with their
    items in input order. Items longer than `capacity` raise: callers truncate first."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # Open bins as sorted (remaining, bin index); bisect finds the tightest fit.
    free: list[tuple[int, int]] = []
    for i in order:
        size = lengths[i]
        if size > capacity:
            raise ValueError(f"example of {size} tokens is longer than the pack capacity {capacity}")
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            remaining, b = free.pop(at)
            bins[b].append(i)
            remaining -= size
        else:
            b = len(bins)
            bins.append([i])
            remaining = capacity - size
        if remaining > 0:
            bisect.insort(free, (remaining, b))
    return [sorted(b) for b in bins]


def make_pack(examples: Sequence) -> dict[str, list[int]]:
    """One packed row from whole examples (objects with input_ids and labels)."""
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for ex in examples:
        n = len(ex.input_ids)
        input_ids += ex.input_ids
        labels += [IGNORE_INDEX] + list(ex.labels[1:])
        position_ids += range(n)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def pack_examples(examples: Sequence, capacity: int) -> list[dict[str, list[int]]]:
    """Best-fit-decreasing packs of a window of examples; every example lands in one pack."""
    bins = best_fit_decreasing([len(ex.input_ids) for ex in examples], capacity)
    return [make_pack([examples[i] for i in b]) for b in bins]


class BinPacker:
    """Streaming bin-packing over a window of `window` examples.

    When the window is full it is packed with best-fit decreasing; packs filled to at
    least `min_fill` of capacity go out, the rest are reopened once in the next window
    (so a short tail gets a second chance to be filled) and then go out as they are.
    Memory holds at most about two windows of examples."""

    def __init__(self, capacity: int, window: int = 1000, min_fill: float = 0.9):
        self.capacity, self.window, self.min_fill = capacity, window, min_fill
        self.buffer: list = []
        self.carried: set[int] = set()  # positions in `buffer` that were carried once already
        self.slots = 0
        self.tokens = 0
        self.packs = 0

    def add(self, example) -> Iterator[dict[str, list[int]]]:
        if len(example.input_ids) > self.capacity:
            raise ValueError(f"example of {len(example.input_ids)} tokens is longer than the pack capacity "
                             f"{self.capacity}")
        self.buffer.append(example)
        if len(self.buffer) >= self.window + len(self.carried):
            yield from self._drain(final=False)

    def feed(self, examples: Iterable) -> Iterator[dict[str, list[int]]]:
        for ex in examples:
            yield from self.add(ex)
        yield from self.flush()

    def flush(self) -> Iterator[dict[str, list[int]]]:
        yield from self._drain(final=True)

    def _drain(self, final: bool) -> Iterator[dict[str, list[int]]]:
        buffer, carried = self.buffer, self.carried
        bins = best_fit_decreasing([len(ex.input_ids) for ex in buffer], self.capacity)
        keep: list = []
        for b in bins:
            used = sum(len(buffer[i].input_ids) for i in b)
            if not final and used < self.min_fill * self.capacity and not any(i in carried for i in b):
                keep.extend(buffer[i] for i in b)
                continue
            self.packs += 1
            self.tokens += used
            self.slots += self.capacity
            yield make_pack([buffer[i] for i in b])
        self.buffer = keep
        self.carried = set(range(len(keep)))

    @property
    def efficiency(self) -> float:
        return self.tokens / self.slots if self.slots else 0.0


class BlockChunker:
    """Concatenate documents and cut blocks of exactly `block_size` tokens, streaming.

    Position ids run 0..block_size-1 in each block (documents inside a block see each
    other, separated by EOS, as in GPT-style pretraining). The tail shorter than a block
    is kept as a last, shorter block unless `drop_remainder`. With `track_spans`, each
    block also carries `spans`: the documents (by the id given to `add`) whose tokens it
    holds, a cut document's pieces in every block it reaches."""

    def __init__(self, block_size: int, drop_remainder: bool = False, track_spans: bool = False):
        self.block_size, self.drop_remainder, self.track_spans = block_size, drop_remainder, track_spans
        self.pending: list[int] = []
        # (doc_id, doc_offset, length) of the pending tokens, in order: one entry per document
        # (not per token), so tracking costs nothing next to the token lists themselves.
        self.pieces: deque[tuple[str, int, int]] = deque()

    def add(self, ids: Sequence[int], doc_id: str | None = None) -> Iterator[dict[str, list[int]]]:
        if self.track_spans and len(ids):
            self.pieces.append((doc_id, 0, len(ids)))
        self.pending.extend(ids)
        size = self.block_size
        if len(self.pending) < size:
            return
        full = len(self.pending) // size * size
        for start in range(0, full, size):
            yield self._tracked(self.pending[start:start + size])
        self.pending = self.pending[full:]

    def flush(self) -> Iterator[dict[str, list[int]]]:
        if self.pending and not self.drop_remainder:
            yield self._tracked(self.pending)
        self.pending = []
        self.pieces.clear()

    def feed(self, docs: Iterable[Sequence[int]], doc_ids: Iterable[str] | None = None) -> Iterator[dict[str, list[int]]]:
        ids_of = iter(doc_ids) if doc_ids is not None else None
        for ids in docs:
            yield from self.add(ids, next(ids_of) if ids_of is not None else None)
        yield from self.flush()

    def _tracked(self, ids: list[int]) -> dict[str, list[int]]:
        block = self._block(ids)
        if self.track_spans:
            block["spans"] = self._take_spans(len(ids))
        return block

    def _take_spans(self, n: int) -> list[Span]:
        """The spans of the next `n` pending tokens; a document that runs past them stays
        pending with its offset moved on."""
        spans, at = [], 0
        while at < n and self.pieces:
            doc_id, offset, length = self.pieces[0]
            take = min(length, n - at)
            spans.append(Span(doc_id, at, take, offset))
            if take == length:
                self.pieces.popleft()
            else:
                self.pieces[0] = (doc_id, offset + take, length - take)
            at += take
        return spans

    @staticmethod
    def _block(ids: list[int]) -> dict[str, list[int]]:
        return {"input_ids": list(ids), "labels": [IGNORE_INDEX] + list(ids[1:]), "position_ids": list(range(len(ids)))}


def packing_efficiency(lengths: Iterable[int], capacity: int) -> float:
    """Real tokens / slots for packs of the given lengths, each occupying `capacity` slots."""
    lengths = list(lengths)
    return sum(lengths) / (capacity * len(lengths)) if lengths else 0.0


def padding_efficiency(lengths: Sequence[int], batch_size: int) -> float:
    """Real tokens / slots when batches of `batch_size` examples are padded to their longest."""
    slots = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start:start + batch_size]
        slots += max(batch) * len(batch)
    return sum(lengths) / slots if slots else 0.0
