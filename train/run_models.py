"""What a `--model` argument points at, and how to load it: a run directory, a model directory,
a LoRA adapter directory, a hub id or "tiny".

A training run (train/launcher.py) leaves its weights in `RUN/model/`: full weights for
full/freeze runs and for reward models, LoRA adapters for lora/qlora runs. Everything that
reads a trained model (eval, chat, export, and stage chaining in train.model_loading) goes
through `resolve_model`, so "give me the run directory" works the same everywhere.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"
RUN_MODEL_DIR = "model"
RUN_CONFIG = "train_config.yaml"
REWARD_CARD = "raymill_reward.json"  # written by train.reward_model.save_reward_model
MERGED_DIR = "model_merged"  # stage chaining: a LoRA run's merged weights, beside its model/
MERGED_STAMP = "raymill_merged_from.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class RunModelError(ValueError):
    """The path is not a run, a model or an adapter, or its base model cannot be found."""


@dataclass(frozen=True)
class ResolvedModel:
    source: str                 # what the user gave
    base: str                   # full weights: a local directory or a hub id
    adapter: str | None = None  # a peft (LoRA) adapter directory on top of `base`
    run_dir: str | None = None  # the training run it came from, if any
    stage: str | None = None    # that run's stage (pt / sft / rm / dpo ...)
    template: str | None = None  # that run's chat template name (None: the tokenizer's own)
    is_reward_model: bool = False

    @property
    def tokenizer_dir(self) -> str:
        """Where the tokenizer lives: the adapter dir when the run saved one there (it may have
        added tokens or a chat template), else the base."""
        if self.adapter and any((Path(self.adapter) / name).exists() for name in TOKENIZER_FILES):
            return self.adapter
        return self.base

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "base": self.base, "adapter": self.adapter, "run_dir": self.run_dir,
                "stage": self.stage, "template": self.template, "reward_model": self.is_reward_model}


def _read_run_config(run_dir: Path) -> dict:
    path = run_dir / RUN_CONFIG
    if not path.exists():
        return {}
    import yaml

    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return loaded if isinstance(loaded, dict) else {}


def is_run_dir(path: Path) -> bool:
    return (path / RUN_MODEL_DIR).is_dir() and ((path / RUN_CONFIG).exists() or (path / "run_summary.json").exists())


def _is_reward_dir(path: Path) -> bool:
    if (path / REWARD_CARD).exists():
        return True
    config = path / MODEL_CONFIG
    if config.exists():
        archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        return any(a.endswith("ForSequenceClassification") for a in archs)
    return False


def _adapter_base(adapter_dir: Path) -> str:
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise RunModelError(f"adapter {adapter_dir} does not name its base model; pass --model BASE --adapter {adapter_dir}")
    return str(base)


def _adapter_task(adapter_dir: Path) -> str | None:
    return json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("task_type")


def _local_or_hub(name: str) -> str:
    from train.model_loading import ModelLoadError, resolve_model_path

    try:
        return resolve_model_path(name)
    except ModelLoadError as exc:
        raise RunModelError(str(exc)) from None


def resolve_model(model: str, adapter: str | None = None) -> ResolvedModel:
    """Base weights + optional adapter for a run dir, model dir, adapter dir, hub id or "tiny".

    `adapter` (a LoRA dir or a LoRA run dir) goes on top of `model`, which must then be
    full weights; without it an adapter found in `model` is used with the base it names.
    """
    source = str(model)
    path = Path(os.path.expanduser(source))
    run_dir: Path | None = None
    run_config: dict = {}
    if path.is_dir() and is_run_dir(path):
        run_dir, run_config = path, _read_run_config(path)
        path = path / RUN_MODEL_DIR
    if not path.exists():
        base = _local_or_hub(source)
        if adapter is None:
            return ResolvedModel(source=source, base=base)
        path = Path(base)

    if path.is_dir() and (path / ADAPTER_CONFIG).exists():
        if adapter is not None:
            raise RunModelError(f"{source} holds LoRA adapters itself; give full weights as --model with --adapter")
        base = _adapter_base(path)
        if not Path(base).exists() and run_config.get("model") and Path(str(run_config["model"])).exists():
            base = str(run_config["model"])
        try:
            base = _local_or_hub(base)
        except RunModelError:
            raise RunModelError(f"the base model {base!r} of adapter {path} does not exist here; "
                                f"pass --model BASE --adapter {path}") from None
        if Path(base).is_dir() and (Path(base) / ADAPTER_CONFIG).exists():
            raise RunModelError(f"the base {base} of adapter {path} is itself an adapter; export that one first")
        return ResolvedModel(source=source, base=base, adapter=str(path),
                             run_dir=str(run_dir) if run_dir else None, stage=run_config.get("stage"),
                             template=run_config.get("template"), is_reward_model=_adapter_task(path) == "SEQ_CLS")

    if path.is_dir() and not (path / MODEL_CONFIG).exists():
        raise RunModelError(f"{source} is neither a run directory, a model directory (config.json) nor a LoRA "
                            f"adapter directory ({ADAPTER_CONFIG})")
    base = str(path)
    adapter_dir = None
    if adapter is not None:
        adapter_path = Path(os.path.expanduser(adapter))
        if adapter_path.is_dir() and is_run_dir(adapter_path):
            run_dir, run_config = adapter_path, _read_run_config(adapter_path)
            adapter_path = adapter_path / RUN_MODEL_DIR
        if not (adapter_path / ADAPTER_CONFIG).exists():
            raise RunModelError(f"--adapter {adapter}: no {ADAPTER_CONFIG} there (not a LoRA adapter or LoRA run)")
        adapter_dir = str(adapter_path)
    reward = _is_reward_dir(path) or (adapter_dir is not None and _adapter_task(Path(adapter_dir)) == "SEQ_CLS")
    return ResolvedModel(source=source, base=base, adapter=adapter_dir, run_dir=str(run_dir) if run_dir else None,
                         stage=run_config.get("stage"), template=run_config.get("template"), is_reward_model=reward)


# ---------------------------------------------------------------- quantized bases
def quantization_of(base: str) -> dict | None:
    """The base's saved `quantization_config` (a pre-quantized checkpoint), or None."""
    config = Path(base) / MODEL_CONFIG
    if not config.exists():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("quantization_config")


def is_4bit(quantization: dict | None) -> bool:
    if not quantization:
        return False
    return bool(quantization.get("load_in_4bit")) or quantization.get("bits") == 4 or \
        str(quantization.get("quant_method", "")).lower() in ("gptq", "awq") and quantization.get("bits", 4) == 4


# ---------------------------------------------------------------- loading
def load_tokenizer(resolved: ResolvedModel):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolved.tokenizer_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(resolved: ResolvedModel, dtype: str = "fp32", merge: bool = True, device: str | None = None):
    """The model with its adapter applied (merged into the weights when `merge`, which makes
    inference as fast as the base; unmerged keeps the PeftModel, e.g. to switch it off)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from train.model_loading import torch_dtype

    cls = AutoModelForSequenceClassification if resolved.is_reward_model else AutoModelForCausalLM
    try:
        model = cls.from_pretrained(resolved.base, dtype=torch_dtype(dtype))
    except OSError as exc:
        raise RunModelError(f"cannot load model {resolved.base!r}: {exc}") from None
    if resolved.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, resolved.adapter)
        if merge:
            if is_4bit(quantization_of(resolved.base)):
                raise RunModelError(f"cannot merge adapters into the 4-bit base {resolved.base}; load it unmerged")
            model = model.merge_and_unload()
    if device:
        model.to(device)
    return model.eval()


# ---------------------------------------------------------------- stage chaining
def _adapter_stamp(adapter_dir: Path, base: str) -> dict:
    """What a merged copy was built from; a changed adapter (retrained run) invalidates it."""
    files = sorted(p for p in adapter_dir.iterdir() if p.name.startswith("adapter_"))
    return {"adapter": str(adapter_dir.resolve()), "base": base,
            "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}


def merged_model_dir(model: str | ResolvedModel) -> str:
    """A directory of full weights for `model`: itself when it already is one, else (a LoRA run
    or adapter) the adapters merged into their base once, saved beside the run's model/ as
    model_merged/ and reused while the adapter is unchanged. The run directory is on storage
    every node sees (as Ray Train requires), so workers on other nodes find the copy too."""
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    if resolved.adapter is None:
        return resolved.base
    from schemas.dataset_io import atomic_output_dir, write_json

    adapter_dir = Path(resolved.adapter)
    target = (Path(resolved.run_dir) / MERGED_DIR) if resolved.run_dir else adapter_dir.with_name(adapter_dir.name + "-merged")
    stamp = _adapter_stamp(adapter_dir, resolved.base)
    stamp_path = target / MERGED_STAMP
    if stamp_path.exists() and json.loads(stamp_path.read_text(encoding="utf-8")) == stamp:
        return str(target)
    merged = load_model(resolved, merge=True)
    tokenizer = load_tokenizer(resolved)
    with atomic_output_dir(target) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if (adapter_dir / REWARD_CARD).exists():
            (Path(tmp) / REWARD_CARD).write_text((adapter_dir / REWARD_CARD).read_text(encoding="utf-8"), encoding="utf-8")
        write_json(stamp, Path(tmp) / MERGED_STAMP)
    return str(target)


def chained_model_path(path: str) -> str | None:
    """For train.model_loading: the full-weights directory to train from when `path` is a run
    directory or a LoRA adapter directory; None when `path` is already a plain model."""
    candidate = Path(path)
    if not candidate.is_dir():
        return None
    if is_run_dir(candidate) or (candidate / ADAPTER_CONFIG).exists():
        return merged_model_dir(path)
    return None
