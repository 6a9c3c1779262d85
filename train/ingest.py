"""The training data path as Ray Data transformations.

    mixed read (one streaming read task: weighted interleave + shuffle buffer)
      -> convert (raw rows -> our record kinds, bad rows marked with a drop reason)
      -> tokenize + mask + pack (actor pool; the tokenizer loads once per actor)

Each output row is one training sequence: int32 lists input_ids / labels / position_ids
plus counters (examples, real tokens, label tokens, truncated). On a Ray Train worker:

    shard = ray.train.get_dataset_shard("train")
    for batch in shard.iter_torch_batches(batch_size=8, collate_fn=flatten_collate): ...

Nothing is materialised: the read is a generator, every later step works per batch, and
`DataStats.collect()` is an aggregate over a second pass of the stream. The order of the
stream is a pure function of the seed (preserve_order is set on the dataset's context).
The read is one task by design: it is light (file reads and JSON) and a single stream is
what makes a weighted, staged mix deterministic; tokenization and packing, the heavy
part, run in parallel after it.
"""
from __future__ import annotations

import functools
import json
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from train.formats import DatasetSpec, convert_row, iter_raw_rows, load_dataset_spec
from train.mixing import MixSchedule, interleave, shuffle_buffer
from train.packing import BlockChunker, best_fit_decreasing, make_pack
from train.tokenize import IGNORE_INDEX, Drop, EncodedExample, encode_pretrain_batch, encode_sft

STAGES = ("pt", "sft")
RECORD_COLUMNS = ("source", "id", "kind", "record", "drop_reason", "drop_detail")


# ---------------------------------------------------------------- sources and the mixed read
@dataclass(frozen=True)
class WeightedSpec:
    spec: DatasetSpec
    weight: float = 1.0


def resolve_data(data: Any, registry=None) -> list[WeightedSpec]:
    """Data entries -> specs with weights. An entry is a name or path, a DatasetSpec, a
    (name_or_spec, weight) pair, or a dict {name|path, weight, format, columns, ...}."""
    if data is None or isinstance(data, (str, DatasetSpec, Mapping)):
        data = [data] if data is not None else []
    out = []
    for item in data:
        weight = 1.0
        if isinstance(item, (tuple, list)):
            item, weight = item
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
    """A preference pair trains SFT on its chosen reply."""
    if kind == "preference":
        return {"messages": list(record.get("prompt") or []) + [{"role": "assistant", "content": record.get("chosen")}],
                "system": record.get("system")}
    return record


class TokenizePack:
    """Actor: records -> packed training rows (`emit="train"`), drop rows (`"drops"`),
    one counters row per batch (`"stats"`), or one summary row per record (`"card"`).
    Loads the tokenizer once, in __init__."""

    def __init__(self, tokenizer_path: str, stage: str, template: str, cutoff_len: int, packing: bool, seed: int,
                 train_on_prompt: bool = False, mask_history: bool = False, emit: str = "train"):
        from transformers import AutoTokenizer

        from train.templates import get_template

        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer at {tokenizer_path} has no EOS token; packing needs one")
        self.template = get_template(template, self.tokenizer)
        self.stage, self.cutoff_len, self.packing, self.seed = stage, cutoff_len, packing, seed
        self.train_on_prompt, self.mask_history, self.emit = train_on_prompt, mask_history, emit

    # -- per record
    def _encode(self, kinds, records) -> list[EncodedExample | list[int] | Drop]:
        """sft stage: EncodedExample per record; pt stage: a token list (doc + EOS) per record."""
        out: list[Any] = [None] * len(records)
        texts = {i: r.get("text") for i, (k, r) in enumerate(zip(kinds, records)) if k == "text"}
        if texts:
            encoded = encode_pretrain_batch(list(texts.values()), self.tokenizer)
            for i, ids in zip(texts, encoded):
                if self.stage == "sft" and not isinstance(ids, Drop):
                    ids = ids[: self.cutoff_len]
                    ids = EncodedExample(ids, list(ids), truncated=len(ids) == self.cutoff_len)
                out[i] = ids
        for i, (kind, record) in enumerate(zip(kinds, records)):
            if kind == "text":
                continue
            if self.stage == "pt":
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
        good = []
        for i, ex in zip(kept_idx, encoded):
            if isinstance(ex, Drop):
                drops.append((i, ex.reason, ex.detail))
            else:
                good.append(ex)
        if self.emit == "drops":
            return pa.table({
                "id": pa.array([batch["id"][i] for i, _, _ in drops], pa.string()),
                "source": pa.array([batch["source"][i] for i, _, _ in drops], pa.string()),
                "drop_reason": pa.array([r for _, r, _ in drops], pa.string()),
                "drop_detail": pa.array([d for _, _, d in drops], pa.string()),
            })
        if self.emit == "card":
            return self._card_rows(batch, kept_idx, encoded, drops)
        rows = self._pack(good, batch)
        if self.emit == "stats":
            return self._stats_row(n, good, drops, rows)
        return _rows_table(rows)

    def _pack(self, good: list, batch: dict) -> list[dict]:
        if self.stage == "pt":
            chunker = BlockChunker(self.cutoff_len)
            rows = list(chunker.feed(good))
            for r in rows:
                r.update(num_examples=0, num_truncated=0)
            return rows
        if not self.packing:
            return [dict(make_pack([ex]), num_examples=1, num_truncated=int(ex.truncated)) for ex in good]
        bins = best_fit_decreasing([len(ex.input_ids) for ex in good], self.cutoff_len)
        # Packs come out longest-first; shuffle them with a seed tied to this batch's content
        # so the order stays a function of the data and the seed alone.
        key = zlib.crc32("\x00".join(str(x) for x in batch["id"]).encode())
        random.Random(self.seed * 1_000_003 + key).shuffle(bins)
        return [dict(make_pack([good[i] for i in b]), num_examples=len(b),
                     num_truncated=sum(int(good[i].truncated) for i in b)) for b in bins]

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
        }
        return pa.table({"stats": [json.dumps(stats)]})


@functools.lru_cache(maxsize=4)
def _cached_op(config: tuple) -> TokenizePack:
    return TokenizePack(**dict(config))


def tokenize_pack_task(batch: dict, config: tuple) -> pa.Table:
    """Task form of TokenizePack: the tokenizer loads once per Ray worker process and is
    reused by later tasks (and later passes) on that process."""
    return _cached_op(config)(batch)


def _rows_table(rows: list[dict]) -> pa.Table:
    int_list = pa.list_(pa.int32())
    return pa.table({
        "input_ids": pa.array([r["input_ids"] for r in rows], int_list),
        "labels": pa.array([r["labels"] for r in rows], int_list),
        "position_ids": pa.array([r["position_ids"] for r in rows], int_list),
        "num_examples": pa.array([r["num_examples"] for r in rows], pa.int32()),
        "num_tokens": pa.array([len(r["input_ids"]) for r in rows], pa.int32()),
        "num_truncated": pa.array([r["num_truncated"] for r in rows], pa.int32()),
    })


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
        for key in ("records", "examples", "truncated", "sequences", "tokens", "label_tokens", "slots"):
            setattr(self, key, int(totals[key]))
        self.drops = dict(sorted(drops.items()))
        self.collected = True
        return self

    def card_dataset(self):
        """One row per input record (id, source, tokens, label_tokens, truncated, drop_reason,
        drop_detail) as a lazy Ray Dataset: what train.data_card summarises."""
        return self._make("card")

    def drops_dataset(self):
        """The dropped rows (id, source, drop_reason, drop_detail) as a lazy Ray Dataset."""
        return self._make("drops")

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "examples": self.examples, "dropped": self.dropped,
                "drops_by_reason": dict(self.drops), "truncated": self.truncated, "sequences": self.sequences,
                "tokens": self.tokens, "label_tokens": self.label_tokens, "slots": self.slots,
                "packing_efficiency": round(self.packing_efficiency, 4)}

    def funnel(self) -> list:
        """The ingest as one funnel stage for the data card: records in, examples kept, drops."""
        from schemas.funnel import StageCount

        return [StageCount(stage="train_ingest", rows_in=self.records, kept=self.examples, dropped=dict(self.drops))]


# ---------------------------------------------------------------- the whole path
def build_train_dataset(stage: str, data: Any, tokenizer_path: str, cutoff_len: int, packing: bool = True,
                        seed: int = 0, template: str = "chatml", *, train_on_prompt: bool = False,
                        mask_history: bool = False, registry=None, schedule=None, num_samples: int | None = None,
                        stopping: str = "first_exhausted", shuffle_buffer_size: int = 1000, pack_window: int = 1000,
                        num_actors: int | tuple[int, int] | None = None, block_rows: int = 256):
    """(Ray Dataset of training sequences, DataStats) for stage 'pt' or 'sft'.

    `data`: names/paths/specs/dicts, with weights (see `resolve_data`); None = the
    embedded default sample for the stage. pt: documents are concatenated and cut into
    blocks of `cutoff_len`. sft: conversations are masked and, with `packing`, bin-packed
    by best-fit decreasing over windows of `pack_window` examples into sequences of at
    most `cutoff_len`. `schedule` (list of {until, weights}) with `num_samples` gives a
    staged mix; weights are records drawn per source. `num_actors`: None runs tokenization as
    Ray tasks (tokenizer cached per worker process, scales with free CPUs); an int or a
    (min, max) pair uses an actor pool of that size instead."""
    import ray.data

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if cutoff_len < 2:
        raise ValueError(f"cutoff_len must be >= 2, got {cutoff_len}")
    if data is None:
        from train.default_data import write_default_sample

        data = [write_default_sample(stage)]
    weighted = resolve_data(data, registry)
    specs = [w.spec for w in weighted]
    if schedule is not None and not isinstance(schedule, MixSchedule):
        schedule = MixSchedule(schedule)
    records = records_dataset(specs, [w.weight for w in weighted], seed, schedule, num_samples, stopping,
                              shuffle_buffer_size, block_rows)
    def make(emit: str):
        config = dict(tokenizer_path=str(tokenizer_path), stage=stage, template=template, cutoff_len=cutoff_len,
                      packing=packing, seed=seed, train_on_prompt=train_on_prompt, mask_history=mask_history,
                      emit=emit)
        common = dict(batch_size=pack_window, batch_format="numpy", zero_copy_batch=False)
        if num_actors is None:
            ds = records.map_batches(tokenize_pack_task, fn_kwargs={"config": tuple(sorted(config.items()))}, **common)
        else:
            compute = ray.data.ActorPoolStrategy(size=num_actors) if isinstance(num_actors, int) else \
                ray.data.ActorPoolStrategy(min_size=num_actors[0], max_size=num_actors[1])
            ds = records.map_batches(TokenizePack, compute=compute, fn_constructor_kwargs=config, **common)
        return _ordered(ds)

    return make("train"), DataStats(_make=make)


def sft_default_sample(n: int = 200, seed: int = 0) -> list[dict]:
    from train.default_data import sft_default_sample as sample

    return sample(n, seed)


def pretrain_default_sample(n: int = 400, seed: int = 0) -> list[dict]:
    from train.default_data import pretrain_default_sample as sample

    return sample(n, seed)
