"""Security hygiene of model loading: safetensors only, no remote code unless asked.

Real files, real transformers loaders: a pickle checkpoint (`pytorch_model.bin`, which
`torch.load` unpickles) and a model directory whose `auto_map` names Python code that would
run on load (it writes a marker file, so a test can see whether it ran)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from train.args import FinetuningArguments, ModelArguments, parse_train_config
from train.model_loading import ModelLoadError, load_model, load_tokenizer

REPO = Path(__file__).resolve().parents[2]


def test_remote_code_is_off_by_default_in_every_training_config():
    assert ModelArguments().trust_remote_code is False
    assert parse_train_config({}).model.trust_remote_code is False
    assert parse_train_config({"trust_remote_code": True}).model.trust_remote_code is True  # only when asked


def _remote_code_model(tiny_model_dir: Path, where: Path) -> tuple[Path, Path]:
    """A copy of the tiny model whose config is of a type only `configuration_evil.py` defines
    (so nothing but that code can load it); importing the file writes `marker`.
    Returns (model dir, marker path)."""
    model = where / "remote-code-model"
    shutil.copytree(tiny_model_dir, model)
    marker = where / "remote-code-ran"
    (model / "configuration_evil.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig\n\n\n"
        "class EvilConfig(LlamaConfig):\n"
        "    model_type = 'evil-llama'\n"
    )
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="evil-llama", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    (model / "config.json").write_text(json.dumps(config))
    return model, marker


def test_a_model_with_remote_code_does_not_run_it_unless_asked(tiny_model_dir, tmp_path):
    model, marker = _remote_code_model(Path(tiny_model_dir), tmp_path)
    with pytest.raises((ValueError, OSError, ModelLoadError)):
        load_model(ModelArguments(model=str(model)), FinetuningArguments())
    load_tokenizer(ModelArguments(model=str(model)))  # a stock fast tokenizer: loads, runs nothing
    assert not marker.exists(), "the model's own Python code ran although trust_remote_code was off"

    # Control: the same directory with trust_remote_code=True does run the code, so the check
    # above could have failed. In a child process with its own HF module cache: transformers
    # copies remote code into that cache, and this one is thrown away with tmp_path.
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf-modules"), "PYTHONPATH": str(REPO)}
    control = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom transformers import AutoConfig\n"
                               "AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)\n", str(model)],
        env=env, capture_output=True, text=True, timeout=120)
    assert control.returncode == 0, control.stderr[-2000:]
    assert marker.read_text() == "ran"


def _pickle_checkpoint(tiny_model_dir: Path, where: Path) -> Path:
    """The tiny model saved the old way: weights in pytorch_model.bin (a torch pickle), no safetensors.
    (transformers 5 no longer writes that format itself, but still reads it.)"""
    import torch
    from safetensors.torch import load_file

    out = where / "pickle-model"
    shutil.copytree(tiny_model_dir, out)
    weights = out / "model.safetensors"
    torch.save(load_file(weights), out / "pytorch_model.bin")
    weights.unlink()
    return out


def test_the_training_model_directory_holds_safetensors_weights(tiny_model_dir):
    weights = {p.name for p in Path(tiny_model_dir).iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth")}
    assert weights == {"model.safetensors"}
    load_model(ModelArguments(model=str(tiny_model_dir)), FinetuningArguments())  # the safe format loads


def test_a_pickle_checkpoint_is_refused_with_a_message(tiny_model_dir, tmp_path):
    checkpoint = _pickle_checkpoint(Path(tiny_model_dir), tmp_path)
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(ModelArguments(model=str(checkpoint)), FinetuningArguments())
