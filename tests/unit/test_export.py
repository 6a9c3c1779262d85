"""Export and stage chaining: a LoRA run directory merges into a plain checkpoint whose logits
equal base + adapter; 4-bit bases and unavailable quantizers are refused in one line."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from train.export import ExportError, ExportOptions, check_export, export_model, read_export_info
from train.run_models import MERGED_STAMP, RunModelError, chained_model_path, resolve_model

REPO = Path(__file__).resolve().parents[2]


def make_lora_run(base: Path, run_dir: Path, seed: int = 0) -> Path:
    """A run directory laid out as train/launcher.py leaves a LoRA sft run, with non-zero adapters."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False)  # random B too: a zero adapter would make every check trivial
    peft_model = get_peft_model(model, config)
    (run_dir / "model").mkdir(parents=True)
    peft_model.save_pretrained(run_dir / "model")
    AutoTokenizer.from_pretrained(base).save_pretrained(run_dir / "model")
    (run_dir / "train_config.yaml").write_text(yaml.safe_dump({"stage": "sft", "model": str(base), "template": None,
                                                                "finetuning_type": "lora"}), encoding="utf-8")
    (run_dir / "run_summary.json").write_text("{}", encoding="utf-8")
    return run_dir


@pytest.fixture()
def lora_run(tiny_model_dir, tmp_path):
    return make_lora_run(tiny_model_dir, tmp_path / "run")


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _reference_logits(base: Path, adapter: Path, ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    return model(input_ids=ids).logits


def test_resolve_a_lora_run_directory(lora_run, tiny_model_dir):
    resolved = resolve_model(str(lora_run))
    assert resolved.base == str(tiny_model_dir) and resolved.adapter == str(lora_run / "model")
    assert (resolved.run_dir, resolved.stage, resolved.is_reward_model) == (str(lora_run), "sft", False)
    assert resolve_model(str(tiny_model_dir), str(lora_run)).adapter == str(lora_run / "model")
    with pytest.raises(RunModelError, match="neither a run directory"):
        resolve_model(str(lora_run.parent))


@torch.no_grad()
def test_exported_merged_model_equals_base_plus_adapter(lora_run, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "exported"
    summary = export_model(resolve_model(str(lora_run)), out)
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = _ids(exported.config.vocab_size)
    reference = _reference_logits(tiny_model_dir, lora_run / "model", ids)
    base_logits = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(input_ids=ids).logits
    assert (reference - base_logits).abs().max() > 1e-3  # the adapter changes the model
    assert torch.allclose(exported(input_ids=ids).logits, reference, atol=1e-4)
    assert not any("lora" in name for name in exported.state_dict())
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert set(json.loads((out / "generation_config.json").read_text())["eos_token_id"]) == {tokenizer.eos_token_id, im_end}
    assert read_export_info(out)["merged_adapter"] is True and summary["stop_token_ids"] == [tokenizer.eos_token_id, im_end]


def _four_bit_base(tiny_model_dir: Path, target: Path) -> Path:
    """The tiny model's directory with the quantization_config a saved bitsandbytes 4-bit checkpoint carries."""
    shutil.copytree(tiny_model_dir, target)
    config = json.loads((target / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
                                     "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32"}
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_four_bit_base_is_refused_in_one_line(lora_run, tiny_model_dir, tmp_path):
    base = _four_bit_base(tiny_model_dir, tmp_path / "base-4bit")
    with pytest.raises(ExportError, match="refusing to merge LoRA adapters into the 4-bit base"):
        check_export(resolve_model(str(base), str(lora_run)), ExportOptions())
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "export.py"), "--model", str(base), "--adapter",
                          str(lora_run), "--output", str(tmp_path / "never")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "4-bit base" in out.stderr
    assert not (tmp_path / "never").exists()


def test_gptq_without_its_package_or_gpu_is_refused(lora_run):
    import importlib.util

    if importlib.util.find_spec("gptqmodel") is not None and torch.cuda.is_available():
        pytest.skip("gptqmodel and a GPU are present: quantized export is allowed here")
    with pytest.raises(ExportError, match="quantize=gptq needs"):
        check_export(resolve_model(str(lora_run)), ExportOptions(quantize="gptq"))
    with pytest.raises(ExportError, match="unknown quantize"):
        ExportOptions(quantize="int3")


@torch.no_grad()
def test_stage_chaining_trains_on_the_merged_run(lora_run, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from train.model_loading import resolve_model_path

    merged = chained_model_path(str(lora_run))
    assert merged == str(lora_run / "model_merged") and resolve_model_path(str(lora_run)) == merged
    stamp = Path(merged) / MERGED_STAMP
    written = stamp.stat().st_mtime_ns
    assert chained_model_path(str(lora_run)) == merged and stamp.stat().st_mtime_ns == written  # reused, not rebuilt
    ids = _ids(64)
    logits = AutoModelForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
    assert torch.allclose(logits, _reference_logits(tiny_model_dir, lora_run / "model", ids), atol=1e-4)
    assert chained_model_path(str(tiny_model_dir)) is None  # plain models pass through
