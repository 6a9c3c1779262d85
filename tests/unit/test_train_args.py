"""Training options: parsing, bad input, schedules (WSD), DeepSpeed config names, model-loading errors."""
from __future__ import annotations

import importlib.util

import pytest

from jobs.common import load_config
from train.args import TrainConfigError, parse_train_config
from train.model_loading import ModelLoadError, check_dtype, pick_attn_implementation, resolve_model_path
from train.schedulers import lr_at, scheduler_arguments
from train.stages import get_workflow, stage_names
from train.worker import deepspeed_config


def test_yaml_plus_overrides_flat_and_sectioned(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("stage: pt\nlearning_rate: 0.001\ntraining:\n  max_steps: 7\nlora_target: q_proj,v_proj\n")
    raw = load_config(yaml_file, ["learning_rate=3e-4", "finetuning_type=lora", "data=[a, b]"])
    cfg = parse_train_config(raw)
    assert cfg.launch.stage == "pt"
    assert cfg.training.learning_rate == pytest.approx(3e-4)
    assert cfg.training.max_steps == 7
    assert cfg.finetuning.finetuning_type == "lora"
    assert cfg.finetuning.lora_target == ["q_proj", "v_proj"]
    assert cfg.data.data == ["a", "b"]
    # the flat dict round-trips
    assert parse_train_config(cfg.to_dict()) == cfg


def test_tiny_defaults_apply_only_where_unset():
    assert parse_train_config({}).training.learning_rate == pytest.approx(2e-3)
    assert parse_train_config({"learning_rate": 1e-5}).training.learning_rate == pytest.approx(1e-5)
    assert parse_train_config({"model": "/some/model"}).training.learning_rate == pytest.approx(1e-4)


@pytest.mark.parametrize("raw, message", [
    ({"learning_rat": 1e-3}, "did you mean 'learning_rate'"),
    ({"finetuning_type": "prefix"}, "unknown finetuning_type 'prefix'"),
    ({"lr_scheduler": "step"}, "unknown lr_scheduler 'step'"),
    ({"dtype": "int8"}, "unknown dtype"),
    ({"max_steps": "many"}, "max_steps"),
    ({"max_steps": 2.5}, "must be an integer"),
    ({"use_gpu": "maybe"}, "true or false"),
    ({"save_steps": 5, "logging_steps": 2}, "multiple of logging_steps"),
    ({"from_scratch": True, "finetuning_type": "lora"}, "from_scratch"),
    ({"finetuning_type": "qlora", "quantization_bit": 3}, "quantization_bit"),
])
def test_bad_options_are_clear_errors(raw, message):
    with pytest.raises(TrainConfigError, match=message):
        parse_train_config(raw)


def test_stage_registry_knows_pt_sft_and_rejects_unknown():
    assert {"pt", "sft"} <= set(stage_names())
    assert get_workflow("sft").name == "sft" and get_workflow("pt").name == "pt"
    with pytest.raises(ValueError, match="unknown stage 'ppo2'.*pt.*sft"):
        get_workflow("ppo2")


def test_wsd_schedule_warms_holds_and_decays():
    params = parse_train_config({"lr_scheduler": "wsd", "warmup_steps": 10, "decay_ratio": 0.2,
                                 "min_lr_ratio": 0.1}).training
    args = scheduler_arguments(params, 100)
    assert args["lr_scheduler_type"] == "warmup_stable_decay"
    assert args["lr_scheduler_kwargs"]["num_decay_steps"] == 20
    peak = 1.0
    assert lr_at(0, peak, params, 100) < 0.2
    assert lr_at(5, peak, params, 100) == pytest.approx(0.5, abs=0.1)
    assert all(lr_at(s, peak, params, 100) == pytest.approx(1.0) for s in (10, 40, 79))
    assert lr_at(90, peak, params, 100) < 1.0
    assert lr_at(100, peak, params, 100) == pytest.approx(0.1, abs=1e-6)


def test_wsd_rejects_phases_longer_than_the_run():
    params = parse_train_config({"lr_scheduler": "wsd", "warmup_steps": 8, "decay_ratio": 0.5}).training
    with pytest.raises(TrainConfigError, match="exceed max_steps"):
        scheduler_arguments(params, 10)


def test_cosine_and_constant_schedules():
    cosine = parse_train_config({"lr_scheduler": "cosine", "warmup_ratio": 0.1}).training
    assert scheduler_arguments(cosine, 50)["warmup_steps"] == 5
    assert lr_at(50, 1.0, cosine, 50) == pytest.approx(0.0, abs=1e-6)
    constant = parse_train_config({"lr_scheduler": "constant"}).training
    assert lr_at(30, 1.0, constant, 50) == pytest.approx(1.0)


def test_deepspeed_configs_by_name_and_unknown_name():
    for name, stage in (("zero0", 0), ("zero2", 2), ("zero3", 3), ("zero2_offload", 2), ("zero3_offload", 3)):
        config = deepspeed_config(name, use_gpu=False)
        assert config["zero_optimization"]["stage"] == stage
        assert config["zero_force_ds_cpu_optimizer"] is False  # CPU: torch optimizer, no CPU-Adam JIT build
    assert "zero_force_ds_cpu_optimizer" not in deepspeed_config("zero2", use_gpu=True)
    with pytest.raises(ValueError, match="unknown DeepSpeed config 'zero5'.*zero2"):
        deepspeed_config("zero5", use_gpu=False)


def test_model_paths_and_device_capabilities(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_path(str(tmp_path / "no-such-model"))
    assert resolve_model_path("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # a hub id passes through
    assert pick_attn_implementation("auto", use_gpu=False) == "sdpa_segments"
    assert pick_attn_implementation("eager", use_gpu=False) == "eager"
    with pytest.raises(ModelLoadError, match="flash_attention_2 needs a CUDA GPU"):
        pick_attn_implementation("flash_attention_2", use_gpu=False)
    with pytest.raises(TrainConfigError, match="fp16 needs a GPU"):
        check_dtype("fp16", use_gpu=False)
    check_dtype("bf16", use_gpu=False)  # CPU autocast supports bf16
    check_dtype("fp32", use_gpu=False)


def test_nonexistent_model_and_qlora_without_bitsandbytes(tmp_path, monkeypatch):
    from train import model_loading

    cfg = parse_train_config({"model": str(tmp_path / "missing"), "finetuning_type": "qlora"})
    with pytest.raises(ModelLoadError, match="does not exist"):
        model_loading.load_model(cfg.model, cfg.finetuning)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(model_loading.importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a))
    with pytest.raises(ModelLoadError, match="needs the bitsandbytes package"):
        model_loading.quantization_config(cfg.finetuning, None)


def test_worker_threads_option():
    import torch

    from train.worker import configure_worker_threads

    before = torch.get_num_threads()
    try:
        assert configure_worker_threads(parse_train_config({"torch_threads": 1})) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    with pytest.raises(TrainConfigError, match="torch_threads must be >= 1"):
        parse_train_config({"torch_threads": 0})


def test_cpu_deepspeed_workers_never_jit_build_the_shm_comm_op(monkeypatch):
    """A killed shm-op build leaves a lock that hangs every later ZeRO run on CPU: the workers
    must not start that build unless asked to."""
    import deepspeed.ops
    from deepspeed.comm.torch import build_shm_op

    from train.worker import SHM_COMM_ENV, skip_deepspeed_jit_comm_build

    monkeypatch.setitem(deepspeed.ops.__compatible_ops__, "deepspeed_shm_comm", True)
    monkeypatch.setenv(SHM_COMM_ENV, "1")
    assert not skip_deepspeed_jit_comm_build(parse_train_config({"deepspeed": "zero2"}))
    assert deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] is True
    monkeypatch.delenv(SHM_COMM_ENV)
    assert not skip_deepspeed_jit_comm_build(parse_train_config({}))  # no DeepSpeed, nothing to change
    assert skip_deepspeed_jit_comm_build(parse_train_config({"deepspeed": "zero2"}))
    assert build_shm_op() is None  # what DeepSpeed's comm backend calls: returns without compiling
