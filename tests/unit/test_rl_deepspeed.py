"""The RL loop under DeepSpeed ZeRO (`--deepspeed zero2`, CPU accelerator, one process in a gloo
group of one): the same losses, KL and weights as the plain path, the learning-rate schedule
and clipping kept, and a resume from a ZeRO checkpoint continuing the curves exactly.

Tolerances: in one process ZeRO-2 steps the same fp32 AdamW on the same gradients as the plain
path (only the flat-buffer layout and the clipping's reduction order differ), so the weights after
the first update agree within 1e-6 absolute (the update itself moves them by about lr = 5e-3).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from train.args import parse_train_config
from train.rl.default import default_prompts
from train.rl.loop import RLLoop
from train.rl.optimizer_steps import DEEPSPEED_TAG, DeepSpeedSteps, PlainSteps, engine_config
from train.rl.options import rl_options
from train.rl.prompts import tokenize_prompts

pytest.importorskip("deepspeed")

LEARNING_RATE = 5e-3


@pytest.fixture(autouse=True, scope="module")
def one_process_group():
    """One gloo group of one for this module's engines (the loop would make it itself). Module-wide:
    DeepSpeed caches its groups, so a group destroyed after one test would be stale in the next;
    destroyed after the last, so later tests in this process do not see a distributed run."""
    import torch.distributed as dist

    from train.rl.optimizer_steps import ensure_process_group

    saved = dict(os.environ)
    ensure_process_group()
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)


def _config(tiny_model_dir, stage: str, deepspeed: str | None, steps: int, **options):
    return parse_train_config({
        "model": str(tiny_model_dir), "stage": stage, "max_steps": steps, "save_steps": 1 if steps < 3 else 3,
        "learning_rate": LEARNING_RATE, "lr_scheduler": "linear", "warmup_ratio": 0.0, "max_grad_norm": 0.5,
        **({"deepspeed": deepspeed} if deepspeed else {}),
        "data_options": {"prompts_per_step": 4, "max_new_tokens": 6, **options}})


def _loop(tiny_model_dir, run_dir: Path, stage="grpo", deepspeed="zero2", steps=1, **options) -> RLLoop:
    from train.model_loading import load_tokenizer

    torch.set_num_threads(2)
    cfg = _config(tiny_model_dir, stage, deepspeed, steps, **options)
    prompts, _ = tokenize_prompts([(r["id"], r) for r in default_prompts(24)], load_tokenizer(cfg.model), 200)
    return RLLoop(cfg, rl_options(cfg.data.data_options, stage), prompts, run_dir, steps)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    saved = torch.load(run_dir / "hf" / "rank0" / f"checkpoint-{step}" / "checkpoint" / "trainable.pt")
    return {f"{module}.{name}": t for module, tensors in saved.items() for name, t in tensors.items()}


CASES = {
    # GRPO's default: one pass, the old log-probs from the update's own forward, KL in the loss.
    "grpo": {"num_generations": 4},
    # PPO with a separate critic: two parameter groups (critic at half the rate), 2 epochs x 2 minibatches.
    "ppo": {"critic": "separate", "critic_lr_ratio": 0.5},
}


@pytest.mark.parametrize("stage", sorted(CASES))
def test_zero2_takes_the_plain_paths_first_update(tiny_model_dir, tmp_path, stage):
    from safetensors.torch import load_file

    plain_loop = _loop(tiny_model_dir, tmp_path / "plain", stage, deepspeed=None, **CASES[stage])
    assert isinstance(plain_loop.optimizer_steps, PlainSteps)
    plain_loop.run()
    zero_loop = _loop(tiny_model_dir, tmp_path / "zero2", stage, **CASES[stage])
    assert isinstance(zero_loop.optimizer_steps, DeepSpeedSteps)
    assert zero_loop.optimizer_steps.engine.zero_optimization_stage() == 2
    zero_loop.run()

    plain, zero = _records(tmp_path / "plain")[0], _records(tmp_path / "zero2")[0]
    for key in ("reward_mean", "kl", "loss", "policy_loss", "learning_rate"):
        assert zero[key] == pytest.approx(plain[key], rel=1e-5, abs=1e-7), key
    assert torch.isfinite(torch.tensor(zero["loss"]))
    before = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    plain_weights, zero_weights = _weights(tmp_path / "plain", 1), _weights(tmp_path / "zero2", 1)
    assert sorted(zero_weights) == sorted(plain_weights)
    difference = max((zero_weights[k] - plain_weights[k]).abs().max().item() for k in plain_weights)
    moved = max((zero_weights[k] - before[k.split(".", 1)[1]]).abs().max().item()
                for k in zero_weights if k.startswith("actor.") and k.split(".", 1)[1] in before)
    print(f"{stage}: ZeRO-2 vs plain max weight difference {difference:.2e}, moved up to {moved / LEARNING_RATE:.2f} x lr")
    assert moved > 0.5 * LEARNING_RATE, "the update did not move the actor: nothing was compared"
    assert difference < 1e-6
    if stage == "ppo":  # the critic's group ran at half the rate under the engine too
        assert zero_loop.optimizer_steps.optimizer.param_groups[1]["lr"] == pytest.approx(
            0.5 * zero_loop.optimizer_steps.optimizer.param_groups[0]["lr"])
    checkpoint = tmp_path / "zero2" / "hf" / "rank0" / "checkpoint-1" / "checkpoint"
    assert (checkpoint / DEEPSPEED_TAG / "zero_pp_rank_0_mp_rank_00_optim_states.pt").is_file()


class HardStop(Exception):
    pass


def test_zero2_resume_after_a_hard_stop_continues_the_curves(tiny_model_dir, tmp_path):
    """The step, the KL controller, the running reward moments, the prompt position, the schedule
    and ZeRO's optimizer partition all come back: steps 4-6 equal the uninterrupted run's."""
    options = {"num_generations": 2, "target_kl": 0.01, "normalize_reward": True, "reward_clip": 3.0}
    _loop(tiny_model_dir, tmp_path / "whole", steps=6, **options).run()
    whole = _records(tmp_path / "whole")

    stopped = _loop(tiny_model_dir, tmp_path / "cut", steps=6, **options)
    original = stopped.run_step

    def step_then_die():
        if stopped.step == 4:  # step 4 is logged after the step-3 checkpoint, then the process dies
            raise HardStop
        return original()

    stopped.run_step = step_then_die
    with pytest.raises(HardStop):
        stopped.run()
    resumed = _loop(tiny_model_dir, tmp_path / "cut", steps=6, **options)
    resumed.run(resume_from=str(tmp_path / "cut" / "hf" / "rank0" / "checkpoint-3" / "checkpoint"))
    cut = _records(tmp_path / "cut")
    assert [r["step"] for r in cut] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(whole, cut):
        for key in ("reward_mean", "kl", "loss", "kl_coef", "score_mean", "learning_rate"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert whole[-1]["kl_coef"] != whole[0]["kl_coef"]  # the controller moved, and its state came back


def test_a_plain_checkpoint_does_not_resume_under_deepspeed(tiny_model_dir, tmp_path):
    _loop(tiny_model_dir, tmp_path / "plain", deepspeed=None, num_generations=2).run()
    loop = _loop(tiny_model_dir, tmp_path / "zero2", num_generations=2)
    with pytest.raises(ValueError, match="not written under --deepspeed .*resume it without --deepspeed"):
        loop.load_checkpoint(tmp_path / "plain" / "hf" / "rank0" / "checkpoint-1" / "checkpoint")


def test_engine_config_fills_the_auto_values_from_the_rl_run():
    cfg = parse_train_config({"stage": "ppo", "deepspeed": "zero2", "max_grad_norm": 0.7})
    config = engine_config(cfg, minibatch_rows=6, world_size=2)
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"],
            config["train_batch_size"]) == (6, 1, 12)
    assert config["gradient_clipping"] == 0.7
    assert config["bf16"]["enabled"] is False and config["fp16"]["enabled"] is False
    assert config["zero_optimization"]["stage"] == 2
    assert "auto" not in json.dumps(config)
    bf16 = engine_config(parse_train_config({"stage": "grpo", "deepspeed": "zero0", "dtype": "bf16"}), 4, 1)
    assert bf16["bf16"]["enabled"] is True and bf16["zero_optimization"] == {"stage": 0}
