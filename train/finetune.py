"""Finetuning types: full, freeze, lora, qlora (the last two through peft).

`freeze` finds a model's transformer blocks from parameter names (`...layers.<i>.`,
`...h.<i>.`, `...blocks.<i>.`) instead of `config.num_hidden_layers`, so it works for
models whose config names the layer count differently or not at all.

`gradient_checkpointing` is switched on here, on the model, for every type, so each
stage's worker gets it whatever TrainingArguments it builds.
"""
from __future__ import annotations

import re

from train.args import FinetuningArguments, TrainConfigError

# A block index sits between a container name and the rest of the parameter path.
_LAYER_PATTERN = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


def layer_index(param_name: str) -> int | None:
    match = _LAYER_PATTERN.search(param_name)
    return int(match.group(1)) if match else None


def find_layer_indices(model) -> list[int]:
    return sorted({i for name, _ in model.named_parameters() if (i := layer_index(name)) is not None})


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) element counts; 4-bit weights count their packed storage elements."""
    trainable = total = 0
    for param in model.parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def apply_freeze(model, args: FinetuningArguments):
    layers = find_layer_indices(model)
    if not layers:
        raise TrainConfigError("freeze: found no numbered transformer blocks (…layers.<i>. / …h.<i>.) in this model")
    n = args.freeze_trainable_layers
    if abs(n) > len(layers):
        raise TrainConfigError(f"freeze_trainable_layers={n} but the model has {len(layers)} layers")
    chosen = set(layers[-n:] if n > 0 else layers[:-n] if n < 0 else [])
    extra = list(args.freeze_trainable_modules)
    matched_extra = set()
    for name, param in model.named_parameters():
        index = layer_index(name)
        hit = [m for m in extra if m in name.split(".") or name.startswith(m + ".") or f".{m}." in f".{name}"]
        matched_extra.update(hit)
        param.requires_grad_(bool(hit) or (index is not None and index in chosen))
    missing = set(extra) - matched_extra
    if missing:
        raise TrainConfigError(f"freeze_trainable_modules {sorted(missing)} match no parameter of the model")
    if not any(p.requires_grad for p in model.parameters()):
        raise TrainConfigError("freeze: nothing left to train; raise freeze_trainable_layers or name modules")
    return model


def all_linear_modules(model) -> list[str]:
    """Leaf names of every linear layer (incl. bitsandbytes ones) except the output head."""
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for full_name, module in model.named_modules():
        is_linear = isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")
        if is_linear and module is not output and not full_name.endswith("lm_head"):
            names.add(full_name.split(".")[-1])
    return sorted(names)


# Non-reentrant checkpointing (torch's recommended mode) recomputes correctly when the
# checkpointed block's inputs need no grad (frozen embeddings under LoRA/freeze) and with
# DeepSpeed ZeRO-3; the reentrant mode would silently drop the adapters' gradients there.
CHECKPOINTING_KWARGS = {"use_reentrant": False}


def enable_gradient_checkpointing(model, peft: bool = False):
    """Recompute each transformer block in backward instead of keeping its activations.

    `peft`: the embeddings are frozen, so their output would not require grad; making it so
    keeps the adapters' gradients flowing even if a model falls back to reentrant checkpoints.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise TrainConfigError(f"gradient_checkpointing: {type(model).__name__} does not support it")
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name; the old one warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=dict(CHECKPOINTING_KWARGS))
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(CHECKPOINTING_KWARGS))
    if peft:
        model.enable_input_require_grads()
    # A KV cache is useless in training and transformers turns checkpointing off beside it.
    model.config.use_cache = False
    return model


def apply_lora(model, args: FinetuningArguments, quantized: bool = False):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    targets = all_linear_modules(model) if args.lora_target == ["all"] else list(args.lora_target)
    known = {name.split(".")[-1] for name, _ in model.named_modules()}
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise TrainConfigError(f"lora_target {unknown} match no module of the model (linear modules: {all_linear_modules(model)})")
    if quantized:
        # Casts norms to fp32, freezes the quantized base and (when asked) switches on
        # checkpointing, non-reentrant: peft's own default would be the reentrant mode.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=dict(CHECKPOINTING_KWARGS))
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model, peft=True)  # the input grads peft skips in non-reentrant mode
    config = LoraConfig(
        task_type="CAUSAL_LM", r=args.lora_rank, lora_alpha=args.lora_alpha or 2 * args.lora_rank,
        lora_dropout=args.lora_dropout, target_modules=targets, use_dora=args.use_dora,
    )
    return get_peft_model(model, config)


def apply_finetuning(model, args: FinetuningArguments):
    """Set which weights train; returns the model to hand to the Trainer (a PeftModel for lora/qlora)."""
    kind = args.finetuning_type
    if kind == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return enable_gradient_checkpointing(model) if args.gradient_checkpointing else model
    if kind == "freeze":
        model = apply_freeze(model, args)
        return enable_gradient_checkpointing(model) if args.gradient_checkpointing else model
    if kind == "lora":
        return apply_lora(model, args)
    if kind == "qlora":
        if not getattr(model, "is_quantized", False) and getattr(model, "quantization_method", None) is None:
            raise TrainConfigError("qlora needs a model loaded with a quantization config (train.model_loading.load_model)")
        return apply_lora(model, args, quantized=True)
    raise TrainConfigError(f"unknown finetuning_type {kind!r}")
