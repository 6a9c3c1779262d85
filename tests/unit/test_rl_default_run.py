"""The no-argument default `python jobs/train.py --stage grpo` learns.

The config is the one jobs/train.py parses from no arguments (the tiny model and its defaults:
learning rate 2e-3, 5% warmup, cosine, 2 epochs), the prompts are the embedded default set, the
reward the built-in rule reward, and the step count the one the launcher computes (300). The
test runs the first STEPS steps of that 300-step run (the same schedule, so the same steps the
full run takes first) instead of the whole run, and asserts the reward trend over them:
mean reward of the last 5 steps >= first 5 + RISE, KL per token of the last 5 steps < 4.5 nats.
Measured by hand (the whole 300-step default grpo run on Ray, 1 worker): mean reward 0.007 over
steps 1-10, 0.09 over 31-40, 0.52 over 51-60, 0.79 over the last 10; KL 1.76 nats/token at the end.
`--stage ppo` learns with the embedded demo's own defaults (train.args.EMBEDDED_RUN_DEFAULTS:
16 prompts a step, 8 new tokens, 4 epochs, shared critic, lr 6e-3, adaptive KL toward 8 nats a
sequence, half an epoch = 38 steps: reward 0.02 -> 0.88 at step 24, 0.45-0.65 at the end); with the stage's general defaults it did not move (0.010 -> 0.005 over 157 steps).
"""
from __future__ import annotations

import pytest
import torch

from train.args import parse_train_config
from train.rl.loop import RLLoop, total_steps
from train.rl.options import rl_options
from train.rl.prompts import prompt_rows

pytestmark = pytest.mark.slow

# stage -> (steps of the whole default run, steps taken here, required rise of the mean reward)
SHORTENED = {"grpo": (300, 40, 0.04), "ppo": (38, 38, 0.3)}
LEARNING_RATE = {"grpo": 2e-3, "ppo": 6e-3}


@pytest.mark.timeout(600)  # about 45 s alone; a loaded 2-core machine took 196 s
@pytest.mark.parametrize("stage", sorted(SHORTENED))
def test_the_default_run_learns_in_its_first_steps(stage, tiny_model_dir, tmp_path, monkeypatch):
    # "tiny" and the default prompt file resolve in the cache: point it at this session's tiny model.
    monkeypatch.setenv("RAYMILL_CACHE", str(tiny_model_dir.parent))
    torch.set_num_threads(2)
    cfg = parse_train_config({"stage": stage})  # what jobs/train.py builds from `--stage STAGE` alone
    options = rl_options(cfg.data.data_options, stage)
    assert cfg.model.model == "tiny" and not cfg.data.data and not options.reward_function
    assert cfg.training.learning_rate == LEARNING_RATE[stage]
    prompts, _ = prompt_rows(cfg, options)
    steps = total_steps(cfg, options, len(prompts) // cfg.launch.num_workers)  # as the launcher counts them
    default_steps, taken, rise = SHORTENED[stage]
    assert steps == default_steps

    loop = RLLoop(cfg, options, prompts, tmp_path, steps)
    records = [loop.run_step() for _ in range(taken)]
    first = sum(r["reward_mean"] for r in records[:5]) / 5
    last = sum(r["reward_mean"] for r in records[-5:]) / 5
    kl = sum(r["kl"] for r in records[-5:]) / 5
    print(f"default {stage}, steps 1-{taken} of {steps}: reward {first:.3f} -> {last:.3f}, KL {kl:.3f}")
    assert last >= first + rise, f"the default {stage} run's reward went from {first:.3f} to only {last:.3f}"
    assert 0 <= kl < 4.5, f"KL to the reference {kl:.3f} nats/token"
