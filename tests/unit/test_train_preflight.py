"""Bad options of a training run fail before Ray starts, with a message naming the option."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from train import launcher
from train.args import parse_train_config
from train.launcher import preflight

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raw, message", [
    ({"stage": "ppo2"}, "unknown stage 'ppo2'"),
    ({"stage": "sft", "template": "nonesuch"}, "unknown template 'nonesuch'"),
    ({"stage": "sft", "deepspeed": "zero5"}, "unknown DeepSpeed config 'zero5'.*zero2"),
    ({"stage": "sft", "deepspeed": "/no/such/ds.json"}, "unknown DeepSpeed config"),
    ({"stage": "sft", "model": "/no/such/model"}, "model path '/no/such/model' does not exist"),
    ({"stage": "dpo", "tokenizer": "./no/such/tokenizer"}, "does not exist"),
    ({"stage": "sft", "dtype": "fp16"}, "fp16 needs a GPU"),
    ({"stage": "sft", "attn_implementation": "flash"}, "unknown attn_implementation 'flash'.*sdpa_segments"),
    ({"stage": "grpo", "deepspeed": "zero3"}, "--deepspeed zero3: the grpo stage runs ZeRO stage 0, 1 or 2, not 3"),
    ({"stage": "ppo", "deepspeed": "zero3_offload"}, "--deepspeed zero3_offload: the ppo stage runs ZeRO stage 0, 1 or 2"),
    ({"stage": "ppo", "deepspeed": "zero7"}, "unknown DeepSpeed config 'zero7'"),
])
def test_preflight_rejects_bad_options(raw, message):
    with pytest.raises(ValueError, match=message):
        preflight(parse_train_config(raw))


def test_preflight_qlora_needs_bitsandbytes(monkeypatch):
    cfg = parse_train_config({"stage": "sft", "finetuning_type": "qlora"})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ValueError, match="qlora needs the bitsandbytes package"):
        preflight(cfg)


def test_preflight_accepts_good_options():
    for stage in ("pt", "sft", "rm", "dpo"):
        assert preflight(parse_train_config({"stage": stage, "deepspeed": "zero3", "template": "llama3"})).name == stage
    for stage in ("ppo", "grpo"):  # the RL loop's engine: ZeRO 0/1/2, by name or as a JSON file
        for deepspeed in ("zero0", "zero2", "zero2_offload"):
            assert preflight(parse_train_config({"stage": stage, "deepspeed": deepspeed})).name == stage


def test_rl_preflight_reads_the_zero_stage_of_a_config_file(tmp_path):
    import json

    for stage, accepted in ((1, True), (3, False)):
        path = tmp_path / f"zero{stage}_custom.json"
        path.write_text(json.dumps({"zero_optimization": {"stage": stage}}), encoding="utf-8")
        cfg = parse_train_config({"stage": "grpo", "deepspeed": str(path)})
        if accepted:
            assert preflight(cfg).name == "grpo"
        else:
            with pytest.raises(ValueError, match=f"--deepspeed {path}: the grpo stage runs ZeRO stage 0, 1 or 2, not 3"):
                preflight(cfg)


def test_all_records_dropped_is_a_clear_error():
    class Stats:
        collected, sequences, records, dropped = True, 0, 3, 3
        drops = {"missing_field": 3}

        def collect(self):
            return self

    with pytest.raises(ValueError, match=r"no training examples left: 3 records read, 3 dropped.*missing_field: 3"):
        launcher._count_rows(None, Stats())


def test_cli_exits_2_with_one_line_before_starting_ray(tmp_path):
    """`jobs/train.py` with a bad option: exit code 2, `error: ...`, and no Ray session."""
    result = subprocess.run([sys.executable, str(REPO / "jobs" / "train.py"), "--stage", "sft", "--finetuning-type",
                             "lora", "--deepspeed", "zero9", "--output", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: unknown DeepSpeed config 'zero9'" in result.stderr
    assert "Started a local Ray instance" not in result.stderr + result.stdout
    result = subprocess.run([sys.executable, str(REPO / "jobs" / "train.py"), "--finetuning-type", "prefix"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "unknown finetuning_type 'prefix'" in result.stderr


def test_rl_prompt_records_pass_preflight(tmp_path, tiny_model_dir):
    """`--stage grpo --data prompts.jsonl` with the stage's own record shape ({id, prompt: [messages]},
    the embedded default's) is read by the RL preflight, not refused by the generic format sniffing."""
    import json

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": [{"role": "user", "content": f"Say {i}."}]}) + "\n"
                            for i in range(4)), encoding="utf-8")
    for stage in ("grpo", "ppo"):
        assert preflight(parse_train_config({"stage": stage, "model": str(tiny_model_dir), "data": [str(path)]})).name == stage
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="prompt"):
        preflight(parse_train_config({"stage": "grpo", "model": str(tiny_model_dir), "data": [str(empty)]}))
