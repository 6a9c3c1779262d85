"""Load a tokenizer and a causal LM for training: hub id, local path, "tiny", or from scratch.

Device-dependent choices (attention kernel, dtype, 4/8-bit quantization) are made
here by capability, so the rest of the training code never branches on the device.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from train.args import FinetuningArguments, ModelArguments, TrainConfigError


class ModelLoadError(ValueError):
    """The model or tokenizer cannot be found or loaded as asked."""


def resolve_model_path(name: str) -> str:
    """"tiny" -> the tiny kit's path; an existing path -> itself; a path-like name that does
    not exist -> error; anything else is passed on as a hub id."""
    if name == "tiny":
        from train.tiny import tiny_model_path

        return str(tiny_model_path())
    expanded = os.path.expanduser(name)
    if os.path.exists(expanded):
        # Stage chaining: a run directory or a LoRA adapter directory trains on from its full
        # weights (a LoRA run's adapters merged into their base once, see train.run_models).
        from train.run_models import chained_model_path

        return chained_model_path(expanded) or expanded
    looks_like_path = expanded.startswith(("/", "./", "../", "~")) or expanded.count("/") > 1 or os.sep == "\\" and "\\" in expanded
    if looks_like_path:
        raise ModelLoadError(f"model path {name!r} does not exist")
    return name


def pick_attn_implementation(requested: str, use_gpu: bool) -> str:
    """flash_attention_2 when flash-attn and a GPU are present; on CPU SDPA per packed example
    (train.segment_attention); SDPA otherwise. An explicit choice wins."""
    if requested != "auto":
        if requested == "flash_attention_2" and not (use_gpu and _flash_attn_usable()):
            raise ModelLoadError("attn_implementation flash_attention_2 needs a CUDA GPU and the flash-attn package")
        if requested == "sdpa_segments":
            from train.segment_attention import register

            register()
        return requested
    if use_gpu:
        return "flash_attention_2" if _flash_attn_usable() else "sdpa"
    from train.segment_attention import register

    return register()


def _with_attn_fallback(load, attn: str):
    """Load with `attn`; a model class that takes no custom attention function (older
    remote-code models) gets plain SDPA instead of an error."""
    try:
        return load(attn)
    except ValueError as exc:
        if attn != "sdpa_segments" or "attn" not in str(exc).lower():
            raise
        logging.getLogger(__name__).info("model takes no custom attention (%s); using sdpa", exc)
        return load("sdpa")


def _flash_attn_usable() -> bool:
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def check_dtype(dtype: str, use_gpu: bool) -> None:
    """Fail early, with the reason, where the device cannot train in the requested precision."""
    import torch

    if dtype == "fp32":
        return
    if use_gpu and not torch.cuda.is_available():
        raise TrainConfigError("use_gpu is set but this process sees no CUDA device")
    if dtype == "fp16" and not use_gpu:
        raise TrainConfigError("dtype fp16 needs a GPU (mixed fp16 training is not supported on CPU); use fp32 or bf16")
    if dtype == "bf16" and use_gpu and not torch.cuda.is_bf16_supported():
        raise TrainConfigError("dtype bf16 is not supported by this GPU; use fp16 or fp32")


def load_tokenizer(model_args: ModelArguments):
    from transformers import AutoTokenizer

    source = resolve_model_path(model_args.tokenizer or model_args.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=model_args.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load tokenizer from {source!r}: {exc}") from None
    if tokenizer.pad_token is None:
        # Packed batches never pad, but padded collation and some trainers need a pad id.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(finetuning_args: FinetuningArguments, compute_dtype):
    """BitsAndBytesConfig for QLoRA; a clear error when bitsandbytes is missing."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError("finetuning_type qlora needs the bitsandbytes package: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if finetuning_args.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=finetuning_args.quantization_type,
        bnb_4bit_use_double_quant=finetuning_args.double_quantization,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def torch_dtype(dtype: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def require_safetensors(source: str) -> None:
    """Refuse weights stored as pickle: unpickling runs code from the file."""
    path = Path(source)
    if path.is_dir() and not any(path.glob("*.safetensors")) and any((path / n).exists() for n in PICKLE_WEIGHTS):
        raise ModelLoadError(f"{source} holds only pickle weights (pytorch_model.bin), which run code when loaded; "
                             "raymill loads safetensors only: convert them once where you trust the file "
                             "(AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir))")


def load_model(model_args: ModelArguments, finetuning_args: FinetuningArguments, use_gpu: bool = False):
    """A causal LM ready for `train.finetune.apply_finetuning`.

    Weights stay in fp32 for training (mixed precision is the Trainer's job); only
    QLoRA keeps its frozen base quantized and computes in the requested dtype.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    check_dtype(model_args.dtype, use_gpu)
    attn = pick_attn_implementation(model_args.attn_implementation, use_gpu)
    common = {"trust_remote_code": model_args.trust_remote_code}
    if model_args.from_scratch:
        source = model_args.model_config or resolve_model_path(model_args.model)
        if model_args.model_config and not Path(model_args.model_config).exists():
            raise ModelLoadError(f"model config {model_args.model_config!r} does not exist")
        try:
            config = AutoConfig.from_pretrained(source, **common)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read a model config from {source!r}: {exc}") from None
        return _with_attn_fallback(lambda a: AutoModelForCausalLM.from_config(config, attn_implementation=a, **common),
                                   attn)

    source = resolve_model_path(model_args.model)
    require_safetensors(source)
    kwargs = dict(common, dtype=torch_dtype("fp32"), use_safetensors=True)
    if finetuning_args.finetuning_type == "qlora":
        compute = torch_dtype(model_args.dtype if model_args.dtype != "fp32" else "fp32")
        kwargs["quantization_config"] = quantization_config(finetuning_args, compute)
        if use_gpu:
            # bitsandbytes quantizes while placing weights; the worker's GPU is cuda:LOCAL_RANK.
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    try:
        return _with_attn_fallback(lambda a: AutoModelForCausalLM.from_pretrained(source, attn_implementation=a, **kwargs),
                                   attn)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {source!r}: {exc}") from None
