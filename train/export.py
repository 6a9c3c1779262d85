"""Export a trained model as a standard transformers checkpoint: LoRA adapters merged into the
base, safetensors weights, the tokenizer with its chat template, and a generation config
that stops at the end of an assistant turn.

Merging needs full-precision base weights: adding the LoRA product to 4-bit (nf4/GPTQ/AWQ)
weights would round it away, so a quantized base is refused before anything loads (merge
into the original full-precision base instead). GPTQ / AWQ quantization of the merged model
runs only where its package and a CUDA GPU exist; anywhere else it is refused up front.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from train.run_models import ResolvedModel, is_4bit, quantization_of

EXPORT_INFO = "raymill_export.json"
QUANTIZERS = {"gptq": ("gptqmodel", "pip install gptqmodel optimum"), "awq": ("awq", "pip install autoawq")}


class ExportError(ValueError):
    """The export cannot be done as asked; the message says why in one line."""


@dataclass
class ExportOptions:
    dtype: str = "fp32"             # dtype of the saved weights: fp32 | bf16 | fp16
    quantize: str | None = None     # None | gptq | awq (needs its package and a GPU)
    bits: int = 4                   # gptq/awq bits
    calibration: list[str] | None = None  # gptq: calibration texts (default: a few built-in sentences)
    template: str | None = None     # check the tokenizer's chat template against this train.templates name
    max_shard_size: str = "5GB"

    def __post_init__(self) -> None:
        if self.dtype not in ("fp32", "bf16", "fp16"):
            raise ExportError(f"export: unknown dtype {self.dtype!r}; choose fp32, bf16 or fp16")
        if self.quantize is not None and self.quantize not in QUANTIZERS:
            raise ExportError(f"export: unknown quantize {self.quantize!r}; choose {', '.join(QUANTIZERS)} or leave it unset")


def check_export(model: ResolvedModel, options: ExportOptions) -> None:
    """Every refusal, before any weights load."""
    if model.adapter and is_4bit(quantization_of(model.base)):
        raise ExportError(f"export: refusing to merge LoRA adapters into the 4-bit base {model.base}: the merged "
                          "weights would be rounded back to 4 bits; pass the full-precision base as --model")
    if options.quantize:
        package, install = QUANTIZERS[options.quantize]
        import torch

        if importlib.util.find_spec(package) is None:
            raise ExportError(f"export: quantize={options.quantize} needs the {package} package ({install}) and a CUDA GPU")
        if not torch.cuda.is_available():
            raise ExportError(f"export: quantize={options.quantize} needs a CUDA GPU; this machine has none")
        if model.is_reward_model:
            raise ExportError(f"export: quantize={options.quantize} is for causal LMs, not reward models")


def stop_token_ids(tokenizer, template_name: str | None) -> list[int]:
    """EOS plus the template's end-of-turn token (e.g. <|im_end|>), so generation stops after a reply."""
    from train.templates import get_template

    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    try:
        stop = get_template(template_name or "tokenizer", tokenizer).stop_text(tokenizer.eos_token)
    except ValueError:  # no chat template: EOS alone
        stop = None
    if stop:
        stop_id = tokenizer.convert_tokens_to_ids(stop)
        if isinstance(stop_id, int) and stop_id != tokenizer.unk_token_id and stop_id not in ids:
            ids.append(stop_id)
    return ids


def chat_template_matches(tokenizer, template_name: str | None) -> bool | None:
    """Whether the tokenizer's own chat template renders a probe conversation the way the
    train.templates template the run used does (None: nothing to compare)."""
    if not template_name or template_name == "tokenizer" or not getattr(tokenizer, "chat_template", None):
        return None
    from train.templates import get_template

    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
             {"role": "user", "content": "Bye"}]
    ours = get_template(template_name).render_generation_prompt(probe, eos_token=tokenizer.eos_token)
    theirs = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    return ours == theirs


def _quantize(merged_dir: Path, output: Path, options: ExportOptions, tokenizer) -> None:  # pragma: no cover - GPU only
    """GPTQ through transformers' GPTQConfig, AWQ through autoawq; only reached after check_export."""
    calibration = options.calibration or ["The model answers the question with care.",
                                          "数据清洗很重要。", "A short story about a river and a garden."]
    if options.quantize == "gptq":
        from transformers import AutoModelForCausalLM, GPTQConfig

        config = GPTQConfig(bits=options.bits, dataset=calibration, tokenizer=tokenizer)
        model = AutoModelForCausalLM.from_pretrained(merged_dir, quantization_config=config, device_map="auto")
        model.save_pretrained(output, max_shard_size=options.max_shard_size)
        return
    from awq import AutoAWQForCausalLM

    model = AutoAWQForCausalLM.from_pretrained(str(merged_dir))
    model.quantize(tokenizer, quant_config={"w_bit": options.bits, "q_group_size": 128, "zero_point": True,
                                            "version": "GEMM"}, calib_data=calibration)
    model.save_quantized(str(output))


def export_model(model: ResolvedModel, output: str | Path, options: ExportOptions | None = None) -> dict[str, Any]:
    """Merge and save; returns what was written (also saved as raymill_export.json)."""
    import tempfile

    from schemas.dataset_io import atomic_output_dir, write_json
    from train.run_models import load_model, load_tokenizer

    options = options or ExportOptions()
    check_export(model, options)
    template = options.template or model.template
    tokenizer = load_tokenizer(model)
    merged = load_model(model, dtype=options.dtype, merge=True)
    stops = stop_token_ids(tokenizer, template)
    if not model.is_reward_model:
        generation = merged.generation_config
        generation.eos_token_id = stops if len(stops) > 1 else (stops[0] if stops else None)
        generation.pad_token_id = tokenizer.pad_token_id
    info = {"source": model.describe(), "options": asdict(options), "stop_token_ids": stops,
            "chat_template": bool(getattr(tokenizer, "chat_template", None)),
            "chat_template_matches_run_template": chat_template_matches(tokenizer, template),
            "merged_adapter": model.adapter is not None}
    with atomic_output_dir(output) as tmp:
        if options.quantize:
            with tempfile.TemporaryDirectory() as staging:
                merged.save_pretrained(staging)
                tokenizer.save_pretrained(staging)
                _quantize(Path(staging), tmp, options, tokenizer)
        else:
            merged.save_pretrained(tmp, max_shard_size=options.max_shard_size)
        tokenizer.save_pretrained(tmp)
        for extra in ("raymill_reward.json",):
            source = Path(model.adapter or model.base) / extra
            if source.exists():
                (tmp / extra).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
        info["files"] = sorted(p.name for p in tmp.iterdir())
        write_json(info, tmp / EXPORT_INFO)
    return {"output": str(output), **info}


def read_export_info(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / EXPORT_INFO).read_text(encoding="utf-8"))
