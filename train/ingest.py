"""The training data path as Ray Data transformations.

    mixed read (one streaming read task: weighted interleave + shuffle buffer)
      -> convert (raw rows -> our record kinds, bad rows marked with a drop reason)
      -> tokenize + mask + pack (actor pool; the tokenizer loads once per actor)

Each output row is one training sequence: int32 lists input_ids / labels / position_ids
plus counters (examples, real tokens, label tokens, truncated). On a Ray Train worker:

    shard = ray.train.get_dataset_shard("train")
    for batch in shard.iter_torch_batches(batch_size=8, collate_fn=flatten_collate): ...

By default the stream is tokenized once, before training, into a cache keyed by a
fingerprint of its inputs (train.token_cache): the packed rows, the per-record card rows
and the stats come from that one pass, and a rerun reads the cache. With
`tokenized_cache: off` nothing is materialised: the read is a generator, every later step
works per batch, and `DataStats.collect()` is an aggregate over a second pass of the
stream. The order of the stream is a pure function of the seed (preserve_order is set on
the dataset's context).
The read is one task by design: it is light (file reads and JSON) and a single stream is
what makes a weighted, staged mix deterministic; tokenization and packing, the heavy
part, run in parallel after it.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from train.formats import DatasetSpec, convert_row, iter_raw_rows, load_dataset_spec
from train.lineage import spans_table
from train.mixing import MixSchedule, interleave, shuffle_buffer
from train.packing import BlockChunker, Span, best_fit_decreasing, example_spans, make_pack
from train.tokenize import IGNORE_INDEX, Drop, EncodedExample, encode_pretrain_batch, encode_sft

# How records become training rows: "blocks" concatenates documents and cuts them into
# blocks of cutoff_len (pretraining); "examples" masks each conversation (SFT) and packs.
LAYOUTS = ("blocks", "examples")
RECORD_COLUMNS = ("source", "id", "kind", "record", "drop_reason", "drop_detail")


# ---------------------------------------------------------------- options
@dataclass
class IngestOptions:
    """`data_options` of the pt and sft stages (train.args keeps the options every stage shares)."""

    train_on_prompt: bool = False  # sft: loss on prompt tokens too
    mask_history: bool = False  # sft: loss on the last assistant turn only
    registry: str | None = None  # a dataset_info.json that --data names resolve in
    schedule: list | None = None  # staged mix: [{until: N, weights: {name: w}}, ...] (needs num_samples)
    num_samples: int | None = None  # records drawn from the mix (None: until a source runs out)
    stopping: str = "first_exhausted"  # first_exhausted | all_exhausted
    shuffle_buffer_size: int = 1000
    pack_window: int = 1000  # examples per best-fit-decreasing packing window
    num_actors: int | None = None  # tokenizer actors (None: Ray tasks, the tokenizer cached per process)
    block_rows: int = 256
    # Tokenize once into a cache before training: "auto" (the user cache; the run directory
    # on a cluster), "off" (stream beside training, tokenizing again for the stats), or a path.
    tokenized_cache: str = "auto"

    def check(self, cfg: Any = None) -> None:
        if self.stopping not in ("first_exhausted", "all_exhausted"):
            raise ValueError(f"data_options.stopping must be first_exhausted or all_exhausted, got {self.stopping!r}")
        if self.schedule is not None and not self.num_samples:
            raise ValueError("data_options.schedule needs data_options.num_samples (the length of the staged mix)")
        for name in ("shuffle_buffer_size", "pack_window", "block_rows"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < (0 if name == "shuffle_buffer_size" else 1):
                raise ValueError(f"data_options.{name} must be a positive integer, got {getattr(self, name)!r}")


# ---------------------------------------------------------------- sources and the mixed read
@dataclass(frozen=True)
class WeightedSpec:
    spec: DatasetSpec
    weight: float = 1.0


def split_weight(entry: str) -> tuple[str, float | None]:
    """"data.jsonl:0.7" -> ("data.jsonl", 0.7); an entry without a numeric suffix has no weight."""
    head, sep, tail = entry.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            return entry, None
        if weight < 0:
            raise ValueError(f"data entry {entry!r}: a mixing weight must be >= 0")
        return head, weight
    return entry, None


def resolve_data(data: Any, registry=None) -> list[WeightedSpec]:
    """Data entries -> specs with weights. An entry is a name or path (optionally
    "path:weight", as `--data a.jsonl:0.7` gives it), a DatasetSpec, a (name_or_spec,
    weight) pair, or a dict {name|path, weight, format, columns, ...}."""
    if data is None or isinstance(data, (str, DatasetSpec, Mapping)):
        data = [data] if data is not None else []
    out = []
    for item in data:
        weight = 1.0
        if isinstance(item, (tuple, list)):
            item, weight = item
        if isinstance(item, str):
            item, given = split_weight(item)
            weight = weight if given is None else given
        if isinstance(item, Mapping):
            entry = dict(item)
            weight = float(entry.pop("weight", weight))
            name = entry.get("name")
            if name and not ("path" in entry or "file_name" in entry):
                spec = load_dataset_spec(name, registry, **{k: v for k, v in entry.items() if k != "name"})
            else:
                spec = load_dataset_spec(entry)
        else:
            spec = load_dataset_spec(item, registry)
        out.append(WeightedSpec(spec, float(weight)))
    if not out:
        raise ValueError("no training data given")
    names = [w.spec.name for w in out]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must be unique in a mix, got {names}")
    return out


def _mixed_rows(specs: Sequence[DatasetSpec], schedule: MixSchedule, seed: int, num_samples: int | None,
                stopping: str, shuffle: int) -> Iterator[tuple[str, int, dict]]:
    by_name = {s.name: s for s in specs}

    def opener(spec: DatasetSpec):
        def open_epoch(epoch: int):
            return enumerate(iter_raw_rows(spec))
        return open_epoch

    mixed = interleave({n: opener(s) for n, s in by_name.items()}, schedule, seed, num_samples, stopping)
    rows = ((name, index, row) for name, _epoch, (index, row) in mixed)
    return shuffle_buffer(rows, shuffle, seed + 1)


def _mixed_read_task(specs, schedule, seed, num_samples, stopping, shuffle, block_rows) -> Iterator[pa.Table]:
    sources, indices, raws = [], [], []
    for name, index, row in _mixed_rows(specs, schedule, seed, num_samples, stopping, shuffle):
        sources.append(name)
        indices.append(index)
        raws.append(json.dumps(row, ensure_ascii=False, default=str))
        if len(raws) >= block_rows:
            yield pa.table({"source": sources, "index": pa.array(indices, pa.int64()), "raw": raws})
            sources, indices, raws = [], [], []
    if raws:
        yield pa.table({"source": sources, "index": pa.array(indices, pa.int64()), "raw": raws})


def _raw_dataset(specs, schedule, seed, num_samples, stopping, shuffle, block_rows):
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class MixedSource(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            args = (specs, schedule, seed, num_samples, stopping, shuffle, block_rows)
            return [ReadTask(lambda: _mixed_read_task(*args), meta)]

    return ray.data.read_datasource(MixedSource(), override_num_blocks=1)


def _read_parquet_file(path: str) -> Iterator[pa.Table]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=CACHE_READ_ROWS):
        yield pa.Table.from_batches([batch])


CACHE_READ_ROWS = 256  # rows per block when a cached split is read through Ray Data


def cached_parquet_dataset(files: Sequence[str]):
    """A token cache split (files written by train.token_cache) as a lazy Ray Dataset: one read
    task per file, in file order.

    Unlike `ray.data.read_parquet`, building it starts nothing: read_parquet lists the files and
    reads their footers with Ray tasks and actors as soon as it is called, which a run that then
    reads the cache itself (train.launcher.direct_train_files) or never touches the dataset pays
    for in worker processes for nothing. These files are ours: no discovery or schema inference
    is needed."""
    import os

    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    files = list(files)

    class CachedParquetSource(Datasource):
        def estimate_inmemory_data_size(self):
            return sum(os.path.getsize(f) for f in files) or None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return [ReadTask(functools.partial(_read_parquet_file, path),
                             BlockMetadata(num_rows=None, size_bytes=os.path.getsize(path), input_files=[path],
                                           exec_stats=None))
                    for path in files]

    return ray.data.read_datasource(CachedParquetSource(), override_num_blocks=max(1, len(files)))


def _convert_batch(batch: dict, specs: Mapping[str, DatasetSpec]) -> pa.Table:
    cols: dict[str, list] = {c: [] for c in RECORD_COLUMNS}
    for source, index, raw in zip(batch["source"], batch["index"], batch["raw"]):
        spec = specs[source]
        row = json.loads(raw)
        result = convert_row(row, spec, int(index))
        cols["source"].append(source)
        cols["kind"].append(spec.kind)
        if isinstance(result, Drop):
            own_id = row.get("id") if isinstance(row, dict) else None
            cols["id"].append(str(own_id) if own_id is not None else f"{source}-{index}")
            cols["record"].append(None)
            cols["drop_reason"].append(result.reason)
            cols["drop_detail"].append(result.detail)
        else:
            cols["id"].append(str(result.get("id")))
            cols["record"].append(json.dumps(result, ensure_ascii=False, default=str))
            cols["drop_reason"].append(None)
            cols["drop_detail"].append(None)
    return pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})


def _ordered(ds):
    ds.context.execution_options.preserve_order = True
    return ds


def records_dataset(specs: Sequence[DatasetSpec], weights: Sequence[float] | None = None, seed: int = 0,
                    schedule: MixSchedule | Sequence | None = None, num_samples: int | None = None,
                    stopping: str = "first_exhausted", shuffle_buffer_size: int = 0, block_rows: int = 256):
    """Mixed, converted records: columns source, id, kind, record (JSON of the row in our
    kind), drop_reason / drop_detail (set on rows that could not be converted)."""
    specs = list(specs)
    if schedule is None:
        schedule = MixSchedule.constant({s.name: w for s, w in zip(specs, weights or [1.0] * len(specs))})
    elif not isinstance(schedule, MixSchedule):
        schedule = MixSchedule(schedule)
    raw = _raw_dataset(specs, schedule, seed, num_samples, stopping, shuffle_buffer_size, block_rows)
    return _ordered(raw.map_batches(_convert_batch, fn_kwargs={"specs": {s.name: s for s in specs}},
                                    batch_format="numpy", batch_size=block_rows, zero_copy_batch=False))


# ---------------------------------------------------------------- tokenize, mask, pack
def _sft_view(record: dict, kind: str) -> dict:
    """A preference pair trains SFT on its chosen reply, a ranked list on its best one."""
    if kind == "preference":
        best = record.get("chosen")
    elif kind == "ranked_preference":
        best = (record.get("responses") or [None])[0]
    else:
        return record
    return {"messages": list(record.get("prompt") or []) + [{"role": "assistant", "content": best}],
            "system": record.get("system")}


class TokenizePack:
    """Actor: records -> packed training rows (`emit="train"`), drop rows (`"drops"`),
    one counters row per batch (`"stats"`), one summary row per record (`"card"`), one
    lineage row per packed row (`"lineage"`: which records' tokens it holds, train.lineage),
    or all but the drops at once for the token cache (`"all"`). Loads the tokenizer once,
    in __init__."""

    def __init__(self, tokenizer_path: str, layout: str, template: str | None, cutoff_len: int, packing: bool,
                 seed: int, train_on_prompt: bool = False, mask_history: bool = False, emit: str = "train"):
        from transformers import AutoTokenizer

        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer at {tokenizer_path} has no EOS token; packing needs one")
        self.template_name, self._template = template, None
        self.layout, self.cutoff_len, self.packing, self.seed = layout, cutoff_len, packing, seed
        self.train_on_prompt, self.mask_history, self.emit = train_on_prompt, mask_history, emit

    @property
    def template(self):
        """Resolved on the first conversation: plain text needs no chat template at all."""
        if self._template is None:
            from train.templates import get_template

            self._template = get_template(self.template_name, self.tokenizer)
        return self._template

    # -- per record
    def _encode(self, kinds, records) -> list[EncodedExample | list[int] | Drop]:
        """examples: EncodedExample per record; blocks: a token list (doc + EOS) per record."""
        out: list[Any] = [None] * len(records)
        texts = {i: r.get("text") for i, (k, r) in enumerate(zip(kinds, records)) if k == "text"}
        if texts:
            encoded = encode_pretrain_batch(list(texts.values()), self.tokenizer)
            for i, ids in zip(texts, encoded):
                if self.layout == "examples" and not isinstance(ids, Drop):
                    ids = ids[: self.cutoff_len]
                    ids = EncodedExample(ids, list(ids), truncated=len(ids) == self.cutoff_len)
                out[i] = ids
        for i, (kind, record) in enumerate(zip(kinds, records)):
            if kind == "text":
                continue
            if self.layout == "blocks":
                # SFT data in pretraining (annealing): the whole rendered conversation is text.
                ex = encode_sft(_sft_view(record, kind), self.tokenizer, self.template, 1 << 30, train_on_prompt=True)
                out[i] = ex if isinstance(ex, Drop) else ex.input_ids
            else:
                out[i] = encode_sft(_sft_view(record, kind), self.tokenizer, self.template, self.cutoff_len,
                                    self.train_on_prompt, self.mask_history)
        return out

    # -- per batch
    def __call__(self, batch: dict) -> pa.Table:
        n = len(batch["id"])
        kept_idx, kinds, records = [], [], []
        drops: list[tuple[int, str, str]] = []
        for i in range(n):
            if batch["drop_reason"][i] is not None:
                drops.append((i, batch["drop_reason"][i], batch["drop_detail"][i]))
            else:
                kept_idx.append(i)
                kinds.append(batch["kind"][i])
                records.append(json.loads(batch["record"][i]))
        encoded = self._encode(kinds, records)
        good, good_ids = [], []
        for i, ex in zip(kept_idx, encoded):
            if isinstance(ex, Drop):
                drops.append((i, ex.reason, ex.detail))
            else:
                good.append(ex)
                good_ids.append(batch["id"][i])
        if self.emit == "drops":
            return pa.table({
                "id": pa.array([batch["id"][i] for i, _, _ in drops], pa.string()),
                "source": pa.array([batch["source"][i] for i, _, _ in drops], pa.string()),
                "drop_reason": pa.array([r for _, r, _ in drops], pa.string()),
                "drop_detail": pa.array([d for _, _, d in drops], pa.string()),
            })
        if self.emit == "card":
            return self._card_rows(batch, kept_idx, encoded, drops)
        rows = self._pack(good, good_ids, batch)
        if self.emit == "stats":
            return self._stats_row(n, good, drops, rows)
        if self.emit == "lineage":
            return _lineage_table(rows)
        if self.emit == "all":
            return pa.table({"train": [_ipc(_rows_table(rows))],
                             "card": [_ipc(self._card_rows(batch, kept_idx, encoded, drops))],
                             "lineage": [_ipc(_lineage_table(rows))],
                             "stats": self._stats_row(n, good, drops, rows).column("stats")})
        return _rows_table(rows)

    def _pack(self, good: list, good_ids: list[str], batch: dict) -> list[dict]:
        """Packed rows of the batch's encoded records; each row's `spans` say which records
        (by id) its tokens come from, for the lineage table."""
        if self.layout == "blocks":
            chunker = BlockChunker(self.cutoff_len, track_spans=True)
            rows = list(chunker.feed(good, good_ids))
            for r in rows:
                r.update(num_examples=0, num_truncated=0)
            return rows
        if not self.packing:
            return [dict(make_pack([ex]), num_examples=1, num_truncated=int(ex.truncated),
                         spans=[Span(rid, 0, len(ex.input_ids))]) for ex, rid in zip(good, good_ids)]
        bins = best_fit_decreasing([len(ex.input_ids) for ex in good], self.cutoff_len)
        # Packs come out longest-first; shuffle them with a seed tied to this batch's content
        # so the order stays a function of the data and the seed alone.
        key = zlib.crc32("\x00".join(str(x) for x in batch["id"]).encode())
        random.Random(self.seed * 1_000_003 + key).shuffle(bins)
        return [dict(make_pack([good[i] for i in b]), num_examples=len(b),
                     num_truncated=sum(int(good[i].truncated) for i in b),
                     spans=example_spans([good_ids[i] for i in b], [len(good[i].input_ids) for i in b]))
                for b in bins]

    def _card_rows(self, batch: dict, kept_idx: list[int], encoded: list, drops: list) -> pa.Table:
        """One row per input record for the training set's card: kept examples with token
        counts, dropped records with reason and detail. No text: the card is a report."""
        rows = []
        for i, ex in zip(kept_idx, encoded):
            if isinstance(ex, Drop):
                continue
            ids = ex.input_ids if isinstance(ex, EncodedExample) else ex
            labels = sum(1 for x in ex.labels if x != IGNORE_INDEX) if isinstance(ex, EncodedExample) else len(ids)
            rows.append((i, len(ids), labels, bool(getattr(ex, "truncated", False)), None, None))
        rows += [(i, None, None, None, reason, detail) for i, reason, detail in drops]
        rows.sort(key=lambda r: r[0])
        return pa.table({
            "id": pa.array([batch["id"][r[0]] for r in rows], pa.string()),
            "source": pa.array([batch["source"][r[0]] for r in rows], pa.string()),
            "tokens": pa.array([r[1] for r in rows], pa.int32()),
            "label_tokens": pa.array([r[2] for r in rows], pa.int32()),
            "truncated": pa.array([r[3] for r in rows], pa.bool_()),
            "drop_reason": pa.array([r[4] for r in rows], pa.string()),
            "drop_detail": pa.array([r[5] for r in rows], pa.string()),
        })

    def _stats_row(self, n: int, good: list, drops: list, rows: list[dict]) -> pa.Table:
        stats = {
            "records": n,
            "examples": len(good),
            "truncated": sum(int(getattr(ex, "truncated", False)) for ex in good),
            "drops": dict(Counter(r for _, r, _ in drops)),
            "sequences": len(rows),
            "tokens": sum(len(r["input_ids"]) for r in rows),
            "label_tokens": sum(sum(1 for x in r["labels"] if x != IGNORE_INDEX) for r in rows),
            "slots": len(rows) * self.cutoff_len,
            # Documents with pieces in more than one sequence (a block boundary cut them). A
            # document never spans two batches (each batch is chunked on its own), so the
            # per-batch counts add up.
            "split_documents": _split_documents(rows),
        }
        return pa.table({"stats": [json.dumps(stats)]})


@functools.lru_cache(maxsize=4)
def _cached_op(config: tuple) -> TokenizePack:
    return TokenizePack(**dict(config))


def tokenize_pack_task(batch: dict, config: tuple) -> pa.Table:
    """Task form of TokenizePack: the tokenizer loads once per Ray worker process and is
    reused by later tasks (and later passes) on that process."""
    return _cached_op(config)(batch)


_INT_LIST = pa.list_(pa.int32())
TRAIN_ROW_SCHEMA = pa.schema([("input_ids", _INT_LIST), ("labels", _INT_LIST), ("position_ids", _INT_LIST),
                              ("num_examples", pa.int32()), ("num_tokens", pa.int32()), ("num_truncated", pa.int32())])
CARD_ROW_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("tokens", pa.int32()),
                             ("label_tokens", pa.int32()), ("truncated", pa.bool_()), ("drop_reason", pa.string()),
                             ("drop_detail", pa.string())])


def _split_documents(rows: list[dict]) -> int:
    """Documents cut by a block boundary: each is the last piece of one sequence, from its
    start (offset 0), continued by the first piece of the next."""
    count = 0
    for row, after in itertools.pairwise(rows):
        if row["spans"] and after["spans"]:
            last, first = row["spans"][-1], after["spans"][0]
            count += last.doc_offset == 0 and first.doc_offset > 0 and first.doc_id == last.doc_id
    return count


def _lineage_table(rows: list[dict]) -> pa.Table:
    return spans_table([r["spans"] for r in rows])


def _rows_table(rows: list[dict]) -> pa.Table:
    return pa.table({
        "input_ids": pa.array([r["input_ids"] for r in rows], _INT_LIST),
        "labels": pa.array([r["labels"] for r in rows], _INT_LIST),
        "position_ids": pa.array([r["position_ids"] for r in rows], _INT_LIST),
        "num_examples": pa.array([r["num_examples"] for r in rows], pa.int32()),
        "num_tokens": pa.array([len(r["input_ids"]) for r in rows], pa.int32()),
        "num_truncated": pa.array([r["num_truncated"] for r in rows], pa.int32()),
    }, schema=TRAIN_ROW_SCHEMA)


def cached_rows(files: Sequence[str], rank: int = 0, world_size: int = 1) -> Callable[[], Iterator[dict]]:
    """One worker's share of the token cache's packed rows, read straight from its Parquet
    files: a callable that opens one pass (the worker's stream repeats it per epoch).

    The launcher's local fast path (train.launcher.direct_train_files): where every worker
    can read the cache files, this is what Ray Data's `streaming_split(equal=True)` of the
    cached read gives each worker, without starting the split coordinator actor and the read
    tasks. Rank r takes the contiguous rows [r*k, (r+1)*k) with k = rows // world_size (the
    remainder is dropped, as Ray Data's equal split drops it), in the cache's stream order;
    one worker gets every row in that order, as from Ray Data. Rows carry the list columns
    as int32 numpy arrays and the counters as ints."""
    counts = [pq.ParquetFile(f).metadata.num_rows for f in files]
    share = sum(counts) // max(1, world_size)
    first, stop = rank * share, (rank + 1) * share
    list_columns = [f.name for f in TRAIN_ROW_SCHEMA if pa.types.is_list(f.type)]

    def one_pass() -> Iterator[dict]:
        offset = 0
        for path, count in zip(files, counts):
            if offset + count <= first or offset >= stop:
                offset += count  # a file wholly outside this worker's share: not opened
                continue
            for batch in pq.ParquetFile(path).iter_batches(batch_size=ROWS_PER_READ):
                lo, hi = max(first - offset, 0), min(stop - offset, batch.num_rows)
                offset += batch.num_rows
                if lo >= hi:
                    continue
                # One numpy array per list column, viewed per row: no Python lists of ints.
                lists = {}
                for name in list_columns:
                    column = batch.column(name)
                    lists[name] = (column.values.to_numpy(zero_copy_only=False), column.offsets.to_numpy())
                scalars = {f.name: batch.column(f.name).to_pylist() for f in TRAIN_ROW_SCHEMA
                           if f.name not in lists and f.name in batch.schema.names}
                for i in range(lo, hi):
                    row = {name: values[bounds[i]:bounds[i + 1]] for name, (values, bounds) in lists.items()}
                    row.update({name: column[i] for name, column in scalars.items()})
                    yield row

    return one_pass


ROWS_PER_READ = 64  # packed rows decoded at a time by cached_rows (a few MB at cutoff 4096)


def _ipc(table: pa.Table) -> bytes:
    """A table as Arrow IPC stream bytes: the cache pass carries several tables per batch."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# ---------------------------------------------------------------- stats
@dataclass
class DataStats:
    """Counts of the data path; filled by `collect()` (one aggregate pass over the stream)."""

    records: int = 0
    examples: int = 0
    truncated: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    sequences: int = 0
    tokens: int = 0
    label_tokens: int = 0
    slots: int = 0
    collected: bool = False
    _make: Any = field(default=None, repr=False, compare=False)
    cache_dir: str | None = None  # the token cache these counts came from (None: streamed)
    cache_reused: bool = False  # True: this run tokenized nothing
    tokenize_seconds: float | None = None
    split_documents: int = 0  # documents whose tokens went into more than one packed sequence
    sources: dict[str, str] = field(default_factory=dict)  # dataset name -> its path (for lineage traces)

    @classmethod
    def from_counts(cls, counts: dict, cache_dir: Path, reused: bool) -> "DataStats":
        """Stats of a token cache: counted in the pass that wrote it, nothing to collect."""
        fields_ = ("records", "examples", "truncated", "sequences", "tokens", "label_tokens", "slots",
                   "split_documents")
        return cls(**{k: int(counts.get(k, 0)) for k in fields_}, drops=dict(counts.get("drops") or {}),
                   collected=True, cache_dir=str(cache_dir), cache_reused=reused,
                   tokenize_seconds=None if reused else counts.get("tokenize_seconds"))

    @property
    def packing_efficiency(self) -> float:
        """Real tokens / slots, a slot being one of cutoff_len positions of every sequence."""
        return self.tokens / self.slots if self.slots else 0.0

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def collect(self) -> "DataStats":
        """Run the aggregate pass (tokenizes the stream once more; nothing is kept)."""
        if self._make is None:
            raise RuntimeError("these DataStats are not attached to a pipeline")
        totals: Counter = Counter()
        drops: Counter = Counter()
        for batch in self._make("stats").iter_batches(batch_size=None, batch_format="numpy"):
            for text in batch["stats"]:
                row = json.loads(text)
                drops.update(row.pop("drops"))
                totals.update(row)
        for key in ("records", "examples", "truncated", "sequences", "tokens", "label_tokens", "slots",
                    "split_documents"):
            setattr(self, key, int(totals[key]))
        self.drops = dict(sorted(drops.items()))
        self.collected = True
        return self

    def card_dataset(self):
        """One row per input record (id, source, tokens, label_tokens, truncated, drop_reason,
        drop_detail) as a lazy Ray Dataset: what train.data_card summarises."""
        if self.cache_dir:
            from train.token_cache import parquet_files

            return _ordered(cached_parquet_dataset(parquet_files(Path(self.cache_dir), "card")))
        return self._make("card")

    def card_tables(self) -> Iterator[pa.Table]:
        """The rows of `card_dataset()` as Arrow tables. From a token cache they are read
        straight from its Parquet files in this process (the training card is written at the
        end of every run: no Ray Data execution, no read tasks to start for a few small files);
        a stream runs its card pass on Ray."""
        if not self.cache_dir:
            rows = self.card_dataset()
            if isinstance(rows, pa.Table):
                yield rows
                return
            for batch in rows.iter_batches(batch_format="pyarrow", batch_size=8192):
                yield batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            return
        from train.token_cache import parquet_files

        for path in parquet_files(Path(self.cache_dir), "card"):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
                yield pa.Table.from_batches([batch])

    def lineage_files(self) -> list[str] | None:
        """The token cache's lineage table (train.lineage), or None for a stream."""
        if not self.cache_dir:
            return None
        from train.token_cache import parquet_files

        return parquet_files(Path(self.cache_dir), "lineage")

    def lineage_tables(self) -> Iterator[pa.Table] | None:
        """A stream's lineage: one more pass over it (the token cache has it from its one
        pass); None for stats not attached to a pipeline."""
        if self._make is None:
            return None
        batches = self._make("lineage").iter_batches(batch_format="pyarrow", batch_size=None)
        return (b if isinstance(b, pa.Table) else pa.Table.from_batches([b]) for b in batches)

    def drops_dataset(self):
        """The dropped rows (id, source, drop_reason, drop_detail) as a lazy Ray Dataset."""
        if self.cache_dir:
            return self.card_dataset().filter(lambda r: r["drop_reason"] is not None) \
                .select_columns(["id", "source", "drop_reason", "drop_detail"])
        return self._make("drops")

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "examples": self.examples, "dropped": self.dropped,
                "drops_by_reason": dict(self.drops), "truncated": self.truncated, "sequences": self.sequences,
                "tokens": self.tokens, "label_tokens": self.label_tokens, "slots": self.slots,
                "packing_efficiency": round(self.packing_efficiency, 4), "split_documents": self.split_documents,
                "tokenized_cache": self.cache_dir,
                "cache_reused": self.cache_reused, "tokenize_seconds": self.tokenize_seconds}

    def funnel(self) -> list:
        """The ingest as one funnel stage for the data card: records in, examples kept, drops."""
        from schemas.funnel import StageCount

        return [StageCount(stage="train_ingest", rows_in=self.records, kept=self.examples, dropped=dict(self.drops))]


# ---------------------------------------------------------------- the whole path
def build_train_dataset(layout: str, data: Any, tokenizer_path: str, cutoff_len: int, packing: bool = True,
                        seed: int = 0, template: str | None = None, options: IngestOptions | None = None,
                        cache_root: str | Path | None = None, **option_overrides):
    """(Ray Dataset of training sequences, DataStats).

    `layout` "blocks" (pt): documents are concatenated and cut into blocks of `cutoff_len`.
    "examples" (sft): conversations are rendered with `template` (None: the tokenizer's own
    chat template), masked and, with `packing`, bin-packed by best-fit decreasing over
    windows of `pack_window` examples into sequences of at most `cutoff_len`.
    `data`: names/paths/specs/dicts, with weights (see `resolve_data`); None = the
    embedded default sample for the layout. `options` (or keyword overrides of its fields):
    staged mix (`schedule` with `num_samples`; weights are records drawn per source),
    tokenizer parallelism, and the token cache (`tokenized_cache`: "auto" caches under
    `cache_root` when one is given, else streams)."""
    import ray.data

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if cutoff_len < 2:
        raise ValueError(f"cutoff_len must be >= 2, got {cutoff_len}")
    options = dataclasses.replace(options or IngestOptions(), **option_overrides)
    options.check()
    if data is None:
        from train.default_data import write_default_sample

        data = [write_default_sample("pt" if layout == "blocks" else "sft")]
    weighted = resolve_data(data, options.registry)
    specs = [w.spec for w in weighted]
    schedule = MixSchedule(options.schedule) if options.schedule is not None else None
    records = records_dataset(specs, [w.weight for w in weighted], seed, schedule, options.num_samples,
                              options.stopping, options.shuffle_buffer_size, options.block_rows)
    num_actors = options.num_actors
    settings = dict(layout=layout, template=template, cutoff_len=cutoff_len, packing=packing, seed=seed,
                    train_on_prompt=options.train_on_prompt, mask_history=options.mask_history)

    def make(emit: str):
        config = dict(tokenizer_path=str(tokenizer_path), emit=emit, **settings)
        common = dict(batch_size=options.pack_window, batch_format="numpy", zero_copy_batch=False)
        if num_actors is None:
            ds = records.map_batches(tokenize_pack_task, fn_kwargs={"config": tuple(sorted(config.items()))}, **common)
        else:
            ds = records.map_batches(TokenizePack, compute=ray.data.ActorPoolStrategy(size=num_actors),
                                     fn_constructor_kwargs=config, **common)
        return _ordered(ds)

    sources = {w.spec.name: w.spec.path if w.spec.loader == "hf" else str(Path(w.spec.path).resolve())
               for w in weighted}
    from train import token_cache

    key_settings = {**settings, "mix": [(w.spec.name, w.spec.format, dict(w.spec.columns), w.weight) for w in weighted],
                    "options": {k: v for k, v in dataclasses.asdict(options).items() if k != "tokenized_cache"}}
    target = token_cache.cache_target(options.tokenized_cache, cache_root, [f for w in weighted for f in w.spec.files()],
                                      str(tokenizer_path), key_settings)
    if target is None:
        return make("train"), DataStats(_make=make, sources=sources)
    counts, reused = token_cache.cached_pass(
        target, lambda: make("all").iter_batches(batch_size=None, batch_format="numpy"),
        TRAIN_ROW_SCHEMA, CARD_ROW_SCHEMA)
    train = _ordered(cached_parquet_dataset(token_cache.parquet_files(target, "train")))
    stats = DataStats.from_counts(counts, target, reused)
    stats.sources = sources
    return train, stats


def dataset_for_config(cfg: Any, layout: str):
    """build_train_dataset with a run's config: its data, tokenizer, template, cutoff, packing,
    seed and `data_options` (IngestOptions); the token cache under the default root."""
    from schemas.options import from_mapping
    from train.token_cache import default_cache_root

    options = from_mapping(IngestOptions, cfg.data.data_options, f"data_options (stage {cfg.launch.stage})")
    return build_train_dataset(layout, cfg.data.data or None, cfg.model.tokenizer or cfg.model.model,
                               cfg.data.cutoff_len, cfg.data.packing, cfg.training.seed, cfg.data.template,
                               options, cache_root=default_cache_root(cfg.launch.output))
