"""Typed training arguments, parsed from one flat YAML mapping plus overrides.

Like LLaMA-Factory's hparams, every option has one home dataclass and a unique
name, so a config file is a flat list of `key: value` lines and a command-line
override is `key=value`. Section headings (`model:`, `data:`, `finetuning:`,
`training:`, `launch:`) are accepted too and are merged flat.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

FINETUNING_TYPES = ("full", "freeze", "lora", "qlora")
SCHEDULERS = ("cosine", "linear", "constant", "wsd")
DTYPES = ("fp32", "bf16", "fp16")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "sdpa_segments", "eager", "flash_attention_2")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_SPREAD")


class TrainConfigError(ValueError):
    """A training option is unknown, of the wrong type or inconsistent with another."""


@dataclass
class ModelArguments:
    model: str = "tiny"  # hub id, local path, or "tiny" (the project's tiny Llama)
    tokenizer: str | None = None  # defaults to the model's own tokenizer
    from_scratch: bool = False  # pt only: random init from `model_config` (or the model's config)
    model_config: str | None = None  # config.json file or directory for --from-scratch
    dtype: str = "fp32"  # fp32 | bf16 | fp16 (mixed precision for bf16/fp16)
    attn_implementation: str = "auto"  # auto | sdpa | sdpa_segments | eager | flash_attention_2 (auto: flash on GPU, sdpa_segments on CPU)
    trust_remote_code: bool = False


@dataclass
class DataArguments:
    # Datasets: paths or names, "path:weight", or {path|name, weight, ...} mappings; empty = the embedded sample.
    data: list[str | dict] = field(default_factory=list)
    template: str | None = None  # chat template name (sft); None = the tokenizer's own
    # pt/sft: held-out data evaluated during training (same forms as `data`); or `val_size`.
    eval_data: list[str | dict] = field(default_factory=list)
    cutoff_len: int = 512
    packing: bool = True
    data_options: dict[str, Any] = field(default_factory=dict)  # passed through to the ingest builder
    collect_data_stats: bool = True  # one extra pass over the stream for data_stats.json (kept/dropped counts)


@dataclass
class FinetuningArguments:
    finetuning_type: str = "full"
    freeze_trainable_layers: int = 1  # freeze: train the last N layers (0 = none, negative = first N)
    freeze_trainable_modules: list[str] = field(default_factory=list)  # freeze: extra names to train
    lora_rank: int = 8
    lora_alpha: int | None = None  # default 2 * rank
    lora_dropout: float = 0.0
    lora_target: list[str] = field(default_factory=lambda: ["all"])  # "all" = every linear but lm_head
    use_dora: bool = False
    quantization_bit: int = 4  # qlora: 4 or 8
    quantization_type: str = "nf4"  # qlora 4-bit: nf4 | fp4
    double_quantization: bool = True
    gradient_checkpointing: bool = False  # recompute each block in backward: less activation memory, ~30% more compute


@dataclass
class HyperParameters:
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    decay_ratio: float = 0.1  # wsd: fraction of steps spent decaying
    min_lr_ratio: float = 0.0  # wsd: floor as a fraction of the peak
    weight_decay: float = 0.0
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs (a stream's length is otherwise counted once)
    per_device_batch_size: int = 1  # packed sequences per worker per micro-batch
    seed: int = 42
    # pt/sft eval during training: `val_size` packed rows held out of the training set (a
    # fraction below 1, or a count), or `eval_data`; evaluated every `eval_steps` (0: at every save).
    val_size: float = 0.0
    eval_steps: int = 0
    load_best_model_at_end: bool = False  # the final model is the checkpoint with the best metric
    metric_for_best_model: str = "eval_loss"
    neftune_noise_alpha: float | None = None
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    optim: str = "adamw_torch"


@dataclass
class LaunchArguments:
    stage: str = "sft"
    output: str = "runs/train"
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float | None = None  # None: 1, or 0 where the cluster is too small to also feed the data
    torch_threads: int | None = None  # CPU runs: None = the node's cores split between its workers
    deepspeed: str | None = None  # zero0 | zero2 | zero3 | zero2_offload | zero3_offload | path
    resume: bool = False
    overwrite_output: bool = False
    # Ray Train restarts of a failed worker group, each from the latest checkpoint Ray Train
    # has registered (-1: no limit). 0: a dead worker fails the run.
    max_failures: int = 0
    placement_strategy: str = "PACK"  # PACK | SPREAD (one worker per node where possible) | STRICT_SPREAD


@dataclass
class TrainConfig:
    model: ModelArguments = field(default_factory=ModelArguments)
    data: DataArguments = field(default_factory=DataArguments)
    finetuning: FinetuningArguments = field(default_factory=FinetuningArguments)
    training: HyperParameters = field(default_factory=HyperParameters)
    launch: LaunchArguments = field(default_factory=LaunchArguments)

    def to_dict(self) -> dict:
        """Flat mapping, the same shape `parse_train_config` reads (goes into the run dir and the workers)."""
        flat: dict[str, Any] = {}
        for section in SECTIONS:
            flat.update(dataclasses.asdict(getattr(self, section)))
        return flat


SECTIONS = {
    "model": ModelArguments,
    "data": DataArguments,
    "finetuning": FinetuningArguments,
    "training": HyperParameters,
    "launch": LaunchArguments,
}
_HOME = {f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


def _flatten(raw: dict) -> dict:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            for inner, inner_value in value.items():
                flat[inner] = inner_value
        else:
            flat[key] = value
    return flat


def _coerce(name: str, value: Any, annotation: str) -> Any:
    """Check one value against its field's type; numbers from YAML/CLI are cast where lossless."""
    if value is None:
        if "None" in annotation:
            return None
        raise TrainConfigError(f"option {name!r} may not be empty")
    if annotation.startswith("list"):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, dict) and "dict" in annotation:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise TrainConfigError(f"option {name!r} must be a list, got {value!r}")
        # A list that may hold mappings (per-dataset {path, weight}) keeps them as they are.
        return [dict(v) if isinstance(v, dict) and "dict" in annotation else str(v) for v in value]
    if annotation.startswith("dict"):
        if not isinstance(value, dict):
            raise TrainConfigError(f"option {name!r} must be a mapping, got {value!r}")
        return value
    if annotation.startswith("bool"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise TrainConfigError(f"option {name!r} must be true or false, got {value!r}")
    if annotation.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TrainConfigError(f"option {name!r} must be an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise TrainConfigError(f"option {name!r} must be an integer, got {value!r}") from None
        if number != int(number):
            raise TrainConfigError(f"option {name!r} must be an integer, got {value!r}")
        return int(number)
    if annotation.startswith("float"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TrainConfigError(f"option {name!r} must be a number, got {value!r}") from None
    return str(value)


# The tiny model learns at a much higher rate than a real one; applied only where not set.
TINY_MODEL_DEFAULTS = {"learning_rate": 2e-3, "num_train_epochs": 2.0, "warmup_ratio": 0.05}


# The embedded PPO demo (tiny model, default prompts, built-in rule reward): the stage's general
# defaults (2 epochs of 2 minibatches, a separate critic, β 0.05) barely move the tiny policy in
# 300 steps; these make its reward climb from ~0.02 to ~0.8 within 24 steps, after which the
# adaptive KL controller trades some of it back (~0.5-0.8 at the end). Half an epoch of the
# default prompts = 38 steps, under a minute; longer runs at this rate drift (0.9 -> 0.1 by step 60).
EMBEDDED_RUN_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"learning_rate": 6e-3, "num_train_epochs": 0.5, "data_options": {
        "prompts_per_step": 16, "max_new_tokens": 8, "ppo_epochs": 4, "critic": "shared",
        "kl_coef": 0.02, "target_kl": 8.0, "kl_horizon": 40}},
}
_REWARD_OPTIONS = ("reward_model", "reward_function", "reward_adapter")


def _is_embedded_run(flat: dict) -> bool:
    options = flat.get("data_options") or {}
    return not flat.get("data") and not any(options.get(k) for k in _REWARD_OPTIONS)


def _embedded_run_defaults(flat: dict) -> dict:
    """Training options of the stage's embedded demo, applied only where not set."""
    if not _is_embedded_run(flat):
        return {}
    return {k: v for k, v in EMBEDDED_RUN_DEFAULTS.get(str(flat.get("stage")), {}).items() if k != "data_options"}


def _embedded_data_options(flat: dict) -> dict:
    defaults = EMBEDDED_RUN_DEFAULTS.get(str(flat.get("stage")), {}).get("data_options")
    if not defaults or not _is_embedded_run(flat):
        return {}
    return {"data_options": {**defaults, **(flat.get("data_options") or {})}}


def parse_train_config(raw: dict | None) -> TrainConfig:
    """Build a TrainConfig from a (flat or sectioned) mapping; unknown keys are an error with a hint."""
    sections: dict[str, dict] = {name: {} for name in SECTIONS}
    flat = _flatten(raw or {})
    if flat.get("model", "tiny") == "tiny":
        flat = {**TINY_MODEL_DEFAULTS, **_embedded_run_defaults(flat), **flat} | _embedded_data_options(flat)
    for key, value in flat.items():
        if key not in _HOME:
            close = difflib.get_close_matches(key, list(_HOME), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TrainConfigError(f"unknown training option {key!r}{hint}")
        sections[_HOME[key]][key] = value
    built = {}
    for section, cls in SECTIONS.items():
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in sections[section]:
                kwargs[f.name] = _coerce(f.name, sections[section][f.name], str(f.type))
        built[section] = cls(**kwargs)
    config = TrainConfig(**built)
    validate_config(config)
    return config


def validate_config(config: TrainConfig) -> None:
    """Cross-field checks that would otherwise fail deep inside a worker."""
    m, d, f, t, l = config.model, config.data, config.finetuning, config.training, config.launch
    if f.finetuning_type not in FINETUNING_TYPES:
        raise TrainConfigError(f"unknown finetuning_type {f.finetuning_type!r}; choose one of {', '.join(FINETUNING_TYPES)}")
    if t.lr_scheduler not in SCHEDULERS:
        raise TrainConfigError(f"unknown lr_scheduler {t.lr_scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if m.dtype not in DTYPES:
        raise TrainConfigError(f"unknown dtype {m.dtype!r}; choose one of {', '.join(DTYPES)}")
    if m.attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise TrainConfigError(f"unknown attn_implementation {m.attn_implementation!r}; "
                               f"choose one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    if f.finetuning_type == "qlora" and f.quantization_bit not in (4, 8):
        raise TrainConfigError(f"quantization_bit must be 4 or 8, got {f.quantization_bit}")
    if f.finetuning_type == "qlora" and f.quantization_type not in ("nf4", "fp4"):
        raise TrainConfigError(f"quantization_type must be nf4 or fp4, got {f.quantization_type!r}")
    if f.lora_rank < 1:
        raise TrainConfigError(f"lora_rank must be >= 1, got {f.lora_rank}")
    if m.from_scratch and f.finetuning_type != "full":
        raise TrainConfigError("from_scratch trains every weight: use finetuning_type full")
    if d.cutoff_len < 8:
        raise TrainConfigError(f"cutoff_len must be >= 8, got {d.cutoff_len}")
    for name in ("per_device_batch_size", "gradient_accumulation_steps", "num_workers", "logging_steps", "save_steps"):
        value = getattr(t, name, None) if hasattr(t, name) else getattr(l, name)
        if value < 1:
            raise TrainConfigError(f"{name} must be >= 1, got {value}")
    if t.val_size < 0 or t.eval_steps < 0:
        raise TrainConfigError("val_size and eval_steps must be >= 0")
    if t.val_size and d.eval_data:
        raise TrainConfigError("give eval_data or val_size, not both")
    evaluates = bool(t.val_size or d.eval_data)
    if t.load_best_model_at_end and not evaluates:
        raise TrainConfigError("load_best_model_at_end needs an eval set: set val_size or eval_data")
    if t.load_best_model_at_end and t.eval_steps and t.save_steps % t.eval_steps:
        # The best model is picked among saved checkpoints: every save must follow an eval.
        raise TrainConfigError(f"load_best_model_at_end: save_steps ({t.save_steps}) must be a multiple of "
                               f"eval_steps ({t.eval_steps})")
    if l.placement_strategy not in PLACEMENT_STRATEGIES:
        raise TrainConfigError(f"unknown placement_strategy {l.placement_strategy!r}; choose one of "
                               f"{', '.join(PLACEMENT_STRATEGIES)}")
    if l.max_failures < -1:
        raise TrainConfigError(f"max_failures must be >= -1, got {l.max_failures}")
    if l.torch_threads is not None and l.torch_threads < 1:
        raise TrainConfigError(f"torch_threads must be >= 1, got {l.torch_threads}")
    if t.max_steps <= 0 and t.num_train_epochs <= 0:
        raise TrainConfigError("set max_steps > 0 or num_train_epochs > 0")
    if not 0.0 <= t.warmup_ratio < 1.0 or not 0.0 <= t.decay_ratio <= 1.0:
        raise TrainConfigError("warmup_ratio must be in [0, 1) and decay_ratio in [0, 1]")
    if t.save_steps % t.logging_steps:
        # The non-finite-loss guard sees a loss only when it is logged; logging at every save
        # step guarantees a checkpoint is never written after an unseen NaN.
        raise TrainConfigError(f"save_steps ({t.save_steps}) must be a multiple of logging_steps ({t.logging_steps})")
