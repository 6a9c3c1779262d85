"""Stage chaining (issue 15.5): a LoRA sft run directory is the --model of the next stages, on
Ray Train, end to end on the tiny model (its adapters merged once into RUN/model_merged/)."""
from __future__ import annotations

import json

import pytest

from train.args import parse_train_config
from train.launcher import run_training

pytestmark = pytest.mark.slow


def test_lora_sft_run_feeds_dpo_and_rm(ray_session, tiny_model_dir, tmp_path):
    from train.default_data import sft_default_sample

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sft_default_sample(16, seed=1)), encoding="utf-8")
    sft = tmp_path / "sft"
    run_training(parse_train_config({"stage": "sft", "model": str(tiny_model_dir), "data": [str(data)],
                                     "output": str(sft), "finetuning_type": "lora", "max_steps": 3,
                                     "cutoff_len": 128}))
    assert (sft / "model" / "adapter_config.json").is_file()  # a LoRA run saves adapters only

    for stage in ("dpo", "rm"):
        run = tmp_path / stage
        summary = run_training(parse_train_config({"stage": stage, "model": str(sft), "output": str(run),
                                                   "max_steps": 2, "cutoff_len": 128,
                                                   "data_options": {"eval_fraction": 0.2}}))
        assert not summary.get("error"), summary
        trained_from = json.loads((run / "run_summary.json").read_text())
        assert trained_from["max_steps"] == 2
        assert (run / "model").is_dir()
    merged = sft / "model_merged"
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
