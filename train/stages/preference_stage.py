"""What the rm and dpo stages share: their options, the tokenized pair dataset, the eval split.

Data path: train.ingest's mixed read and conversion (our `preference` kind from Parquet,
TRL prompt/chosen/rejected, alpaca/sharegpt with `ranking`), then one Ray Data step
that tokenizes each pair and marks bad pairs with a drop reason. The result is
materialised once: preference sets are small next to pretraining corpora, and the
drop counts for the data card need a full pass anyway. A fixed fraction of pairs,
chosen by a hash of the pair id (stable across runs and worker counts), is held out
for evaluation and written to `<run>/eval_pairs.jsonl`, which every worker reads.

Ranked lists (kind `ranked_preference`) go the same way with one more column, `ranked_ids`
(every response, best first): `--stage rm` trains on all C(K,2) pairs of a list; `--stage
dpo` drops the column and uses each list's best-vs-worst pair.

The two responses of a pair always sit in the same batch. The reward model pads its
batches; DPO packs each training batch into one row by default (train.packed_pairs,
`data_options.padding_free`): on the bench's pairs 42% of a padded batch is padding.
"""
from __future__ import annotations

import dataclasses
import json
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from train.args import TrainConfig, TrainConfigError

EVAL_FILE = "eval_pairs.jsonl"
PREFERENCE_KINDS = ("preference", "ranked_preference")
RANKED_COLUMN = "ranked_ids"
REFERENCE_MODES = ("auto", "copy", "adapter", "precompute")
PADDING_FREE_MODES = ("auto", "true", "false")
NO_REFERENCE = "none"  # the resolved mode of reference-free losses: no reference model at all


@dataclass
class PreferenceOptions:
    """Options of the rm / dpo stages, given as `data_options: {...}` in the training config."""

    eval_fraction: float = 0.1  # pairs held out for eval metrics (by id hash)
    max_eval_pairs: int = 512
    num_actors: int = 1  # tokenizer actors
    tokenized_cache: str = "auto"  # auto (the token cache's default root) | off | a directory
    # Training pairs in a random order drawn from the run's seed (HF/TRL's sampler shuffles
    # too); false = the order of the files, e.g. a curriculum.
    shuffle: bool = True
    # dpo
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid | hinge | ipo | orpo | simpo (the last two need no reference)
    sft_weight: float = 0.0  # γ of the mixed loss: + γ · NLL(chosen) (simpo: CPO's α; orpo has its own)
    reference: str = "auto"  # auto (adapter for lora/qlora, else copy) | copy | adapter | precompute
    reference_free: bool = False  # DPO against a uniform reference: log-ratios are the policy's log-probs
    label_smoothing: float = 0.0  # conservative DPO ε in [0, 0.5): P(label flipped); sigmoid and simpo
    simpo_gamma: float = 0.5  # simpo's target reward margin γ
    padding_free: str = "auto"  # auto | true | false: dpo training batches packed in one row (train.packed_pairs)
    # rm
    use_margin: bool = False  # subtract the pair's `margin` column inside the sigmoid
    center_rewards: float = 0.0  # + c · mean((r_c + r_r)^2)

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> "PreferenceOptions":
        raw = dict(cfg.data.data_options or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise TrainConfigError(f"unknown data_options {unknown} for stage {cfg.launch.stage!r}; "
                                   f"known: {sorted(known)}")
        kwargs = {}
        for name, value in raw.items():
            kind = type(known[name].default)
            try:
                kwargs[name] = value if isinstance(value, kind) else (_boolean(value) if kind is bool else kind(value))
            except (TypeError, ValueError):
                raise TrainConfigError(f"data_options.{name} must be a {kind.__name__}, got {value!r}") from None
        options = cls(**kwargs)
        options.check(cfg)
        return options

    def check(self, cfg: TrainConfig) -> None:
        from train.losses import DPO_LOSS_TYPES, check_dpo_options, needs_reference

        if not 0.0 <= self.eval_fraction < 1.0:
            raise TrainConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.loss_type not in DPO_LOSS_TYPES:
            raise TrainConfigError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {self.loss_type!r}")
        try:
            check_dpo_options(self.loss_type, self.beta, self.label_smoothing, self.sft_weight)
        except ValueError as exc:
            raise TrainConfigError(f"data_options: {exc}") from None
        self.padding_free = self.padding_free.lower()
        if self.padding_free not in PADDING_FREE_MODES:
            raise TrainConfigError(f"padding_free must be one of {PADDING_FREE_MODES}, got {self.padding_free!r}")
        if self.reference not in REFERENCE_MODES:
            raise TrainConfigError(f"reference must be one of {REFERENCE_MODES}, got {self.reference!r}")
        if self.reference != "auto" and not needs_reference(self.loss_type, self.reference_free):
            # A reference the loss never reads would cost a model copy or a precompute pass for nothing.
            raise TrainConfigError(f"data_options.reference={self.reference!r} but loss_type {self.loss_type!r}"
                                   f"{' with reference_free' if self.reference_free else ''} uses no reference; "
                                   "leave reference at auto")
        peft = cfg.finetuning.finetuning_type in ("lora", "qlora")
        if self.reference == "adapter" and not peft:
            raise TrainConfigError("reference=adapter needs finetuning_type lora or qlora")

    def reference_mode(self, finetuning_type: str) -> str:
        from train.losses import needs_reference

        if not needs_reference(self.loss_type, self.reference_free):
            return NO_REFERENCE
        if self.reference != "auto":
            return self.reference
        return "adapter" if finetuning_type in ("lora", "qlora") else "copy"


def _boolean(value: Any) -> bool:
    """A command-line boolean ("true", "no", 1 ...); anything else is an error, not False."""
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ValueError(value)


def is_eval_pair(pair_id: str, fraction: float) -> bool:
    return fraction > 0 and zlib.crc32(pair_id.encode("utf-8")) % 10_000 < fraction * 10_000


class TokenizePairs:
    """Ray Data batch step: converted preference records -> token ids, or a drop reason."""

    def __init__(self, tokenizer_path: str, template: str | None, cutoff_len: int, eval_fraction: float):
        from transformers import AutoTokenizer

        from train.preference_data import resolve_template

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        self.template = resolve_template(template, self.tokenizer)
        self.cutoff_len, self.eval_fraction = cutoff_len, eval_fraction

    def __call__(self, batch: dict) -> pa.Table:
        from train.preference_data import tokenize_pair, tokenize_ranked

        cols: dict[str, list] = {k: [] for k in ("id", "split", "prompt_ids", "chosen_ids", "rejected_ids",
                                                 RANKED_COLUMN, "margin", "drop_reason")}
        for rid, kind, record, reason in zip(batch["id"], batch["kind"], batch["record"], batch["drop_reason"]):
            out: Any = reason
            if reason is None and kind not in PREFERENCE_KINDS:
                out = "not_a_preference_record"
            elif reason is None and kind == "ranked_preference":
                out = tokenize_ranked(json.loads(record), self.tokenizer, self.template, self.cutoff_len)
            elif reason is None:
                row = json.loads(record)
                out = tokenize_pair(row, self.tokenizer, self.template, self.cutoff_len)
            cols["id"].append(str(rid))
            cols["split"].append("eval" if is_eval_pair(str(rid), self.eval_fraction) else "train")
            if isinstance(out, dict):
                for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
                    cols[key].append(out[key])
                cols[RANKED_COLUMN].append(out.get(RANKED_COLUMN))
                cols["margin"].append(out.get("margin"))
                cols["drop_reason"].append(None)
            else:
                for key in ("prompt_ids", "chosen_ids", "rejected_ids", RANKED_COLUMN):
                    cols[key].append(None)
                cols["margin"].append(None)
                cols["drop_reason"].append(str(out))
        return pa.table({name: cols[name] for name in PAIR_SCHEMA.names}, schema=PAIR_SCHEMA)

    @staticmethod
    def empty_table() -> pa.Table:
        return PAIR_SCHEMA.empty_table()


_IDS = pa.list_(pa.int32())
PAIR_SCHEMA = pa.schema([("id", pa.string()), ("split", pa.string()), ("prompt_ids", _IDS), ("chosen_ids", _IDS),
                         ("rejected_ids", _IDS), (RANKED_COLUMN, pa.list_(_IDS)), ("margin", pa.float64()),
                         ("drop_reason", pa.string())])


def toy_data_path() -> str:
    """The embedded toy preference set, written once as TRL-style JSONL in the cache."""
    from schemas.convert import preference_to_trl
    from train.preference_data import toy_preference_table
    from train.tiny import default_cache_dir

    path = Path(default_cache_dir()) / "toy_preferences_v1" / "pairs.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for row in preference_to_trl(toy_preference_table(400, seed=0)):
                out.write(json.dumps(row) + "\n")
        tmp.replace(path)
    return str(path)


def pair_card_rows(table: pa.Table) -> pa.Table:
    """Per pair, for the training data card: id, split, token counts and the drop reason (no text)."""
    import pyarrow.compute as pc

    def length(name: str) -> pa.Array:
        return pc.list_value_length(table.column(name)).cast(pa.int32())

    return pa.table({"id": table.column("id"), "split": table.column("split"),
                     "prompt_tokens": length("prompt_ids"), "chosen_tokens": length("chosen_ids"),
                     "rejected_tokens": length("rejected_ids"), "drop_reason": table.column("drop_reason")})


class PreferenceStats(dict):
    """The counts written to data_stats.json, plus the per-pair rows train.data_card summarises."""

    def __init__(self, counts: dict, card_rows):
        super().__init__(counts)
        self.card_rows = card_rows

    def card_dataset(self):
        return self.card_rows

    def funnel(self) -> list:
        from schemas.funnel import StageCount

        return [StageCount(stage=self["stage"], rows_in=self["rows_in"], kept=self["kept"], dropped=dict(self["dropped"]))]


TRAIN_BLOCK_ROWS = 256  # rows per block of the training pairs handed to Ray Data
PAIRS_CACHE_FORMAT = 1  # bump when TokenizePairs' output changes meaning: old cache entries are ignored


def _tokenize_pairs(cfg: TrainConfig, options: PreferenceOptions, weighted) -> pa.Table:
    """Every input record as one row of TokenizePairs' table (tokens, or a drop reason)."""
    import ray
    import ray.data

    from train.ingest import records_dataset

    records = records_dataset([w.spec for w in weighted], [w.weight for w in weighted], seed=cfg.training.seed)
    tokenized = records.map_batches(
        TokenizePairs, batch_format="numpy", zero_copy_batch=False, batch_size=256,
        compute=ray.data.ActorPoolStrategy(size=options.num_actors),
        fn_constructor_kwargs=dict(tokenizer_path=str(cfg.model.tokenizer or cfg.model.model),
                                   template=cfg.data.template, cutoff_len=cfg.data.cutoff_len,
                                   eval_fraction=options.eval_fraction),
    )
    tables = [t for t in ray.get(list(tokenized.to_arrow_refs())) if t.num_rows]
    return pa.concat_tables(tables) if tables else TokenizePairs.empty_table()


def _cached_pairs(cfg: TrainConfig, options: PreferenceOptions, weighted) -> tuple[pa.Table, bool]:
    """(tokenized pairs, reused): read from the token cache, or tokenized once into it.

    Keyed like the packed-row cache (train.token_cache): data files, tokenizer files and
    every setting that changes a row, so a rerun or a sweep over training options
    tokenizes nothing and starts no tokenizer actors."""
    from train import token_cache

    tokenizer = str(cfg.model.tokenizer or cfg.model.model)
    settings = {"kind": "pairs", "format": PAIRS_CACHE_FORMAT, "template": cfg.data.template,
                "cutoff_len": cfg.data.cutoff_len, "eval_fraction": options.eval_fraction, "seed": cfg.training.seed,
                "mix": [(w.spec.name, w.spec.format, dict(w.spec.columns), w.weight) for w in weighted]}
    target = token_cache.cache_target(options.tokenized_cache, token_cache.default_cache_root(cfg.launch.output),
                                      [f for w in weighted for f in w.spec.files()], tokenizer, settings, "pairs-")
    if target is None:
        return _tokenize_pairs(cfg, options, weighted), False
    return token_cache.cached_table(target, lambda: _tokenize_pairs(cfg, options, weighted), "pairs.parquet")


def build_preference_dataset(cfg: TrainConfig):
    """(Ray Dataset of tokenized training pairs, stats dict); writes the eval pairs into the run dir.

    The tokenized set is small enough to hold as one Arrow table on the driver (a 100k-pair
    set at ~1k tokens a response is ~1 GB of int32), so the counts, the card rows and the
    splits are computed from it directly rather than in more Ray Data passes."""
    import pyarrow.compute as pc
    import ray.data

    from train.ingest import resolve_data

    options = PreferenceOptions.from_config(cfg)
    data = cfg.data.data or [toy_data_path()]
    weighted = resolve_data(data)
    not_pref = [w.spec.name for w in weighted if w.spec.kind not in PREFERENCE_KINDS]
    if not_pref:
        raise TrainConfigError(f"stage {cfg.launch.stage!r} needs preference data; not preference: {not_pref}")
    tokenized, reused = _cached_pairs(cfg, options, weighted)

    card_rows = pair_card_rows(tokenized)
    kept = pc.is_null(tokenized.column("drop_reason"))
    is_train = pc.and_(kept, pc.equal(tokenized.column("split"), "train"))
    is_eval = pc.and_(kept, pc.equal(tokenized.column("split"), "eval"))
    drops = Counter(r for r in tokenized.column("drop_reason").to_pylist() if r is not None)
    stats = PreferenceStats({
        "stage": "preference_tokenize", "rows_in": tokenized.num_rows, "kept": int(pc.sum(kept).as_py() or 0),
        "dropped": dict(sorted(drops.items())),
        "train_pairs": int(pc.sum(is_train).as_py() or 0), "eval_pairs": int(pc.sum(is_eval).as_py() or 0),
        "tokenized_cache_reused": reused}, card_rows)
    if stats["rows_in"] != stats["kept"] + sum(drops.values()):
        raise RuntimeError(f"preference accounting does not add up: {stats}")
    if stats["train_pairs"] == 0:
        raise TrainConfigError(f"no training pairs left after tokenizing: {stats}")

    eval_rows = tokenized.filter(is_eval).slice(0, options.max_eval_pairs).to_pylist()
    write_eval_pairs(Path(cfg.launch.output).expanduser().resolve(), eval_rows)
    # Only the reward model trains on whole lists; DPO's loss is pairwise (best vs worst).
    unused = ["split", "drop_reason"] + ([RANKED_COLUMN] if cfg.launch.stage != "rm" else [])
    train = tokenized.filter(is_train).drop_columns(unused)
    if options.shuffle:  # one permutation: reruns, resumes and every worker count see the same order
        train = train.take(np.random.default_rng(cfg.training.seed).permutation(train.num_rows))
    # Several blocks, so streaming_split can hand each training worker its share.
    blocks = [train.slice(i, TRAIN_BLOCK_ROWS) for i in range(0, train.num_rows, TRAIN_BLOCK_ROWS)]
    return ray.data.from_arrow(blocks), stats


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def write_eval_pairs(run_dir: Path, rows: list[dict]) -> Path:
    path = run_dir / EVAL_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({k: _plain(row[k]) for k in ("id", "prompt_ids", "chosen_ids", "rejected_ids", "margin")})
                      + "\n")
    tmp.replace(path)
    return path


def publish_eval(trainer, metrics: dict[str, float], run_dir: str | Path) -> None:
    """Eval metrics into metrics.jsonl (through the Trainer's log callbacks) and, from
    rank 0, into `<run>/eval_metrics.json`; Ray's final result keeps only its last report."""
    from schemas.dataset_io import write_json

    if not metrics:
        return
    trainer.log(dict(metrics))
    if trainer.args.process_index == 0:
        write_json(metrics, Path(run_dir) / "eval_metrics.json")


def read_eval_pairs(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / EVAL_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
