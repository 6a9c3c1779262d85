"""The tiny policy learns the built-in rule reward (say "the") with ppo and with grpo, on CPU.

Thresholds: the mean reward of the last 5 steps is at least 0.3 (grpo) / 0.2 (ppo) above that of the first 5
(the untrained policy scores ≈ 0.01: it says "the" about once in 500 tokens), while the
mean per-token KL to the reference over those last steps stays below 4.5 nats (a policy
that collapsed onto one token would sit near log(vocab) ≈ 6.2). Run without Ray: the loop
is the same object a Ray Train worker runs.
"""
from __future__ import annotations

import json

import pytest
import torch

from train.args import parse_train_config
from train.rl.default import default_prompts
from train.rl.loop import RLLoop
from train.rl.options import rl_options
from train.rl.prompts import tokenize_prompts

pytestmark = pytest.mark.slow


def _run(tiny_model_dir, tmp_path, stage: str, steps: int, learning_rate: float, options: dict) -> list[dict]:
    torch.set_num_threads(2)
    cfg = parse_train_config({"model": str(tiny_model_dir), "stage": stage, "max_steps": steps,
                              "learning_rate": learning_rate, "lr_scheduler": "constant", "warmup_ratio": 0.0,
                              "save_steps": 1000, "data_options": options})
    loop_options = rl_options(cfg.data.data_options, stage)
    from train.model_loading import load_tokenizer

    prompts, _ = tokenize_prompts([(r["id"], r) for r in default_prompts()], load_tokenizer(cfg.model), 200)
    RLLoop(cfg, loop_options, prompts, tmp_path, steps).run()
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def _check_learned(records: list[dict], rise: float) -> tuple[float, float, float]:
    first = sum(r["reward_mean"] for r in records[:5]) / 5
    last = sum(r["reward_mean"] for r in records[-5:]) / 5
    kl = sum(r["kl"] for r in records[-5:]) / 5
    assert last >= first + rise, f"mean reward went from {first:.3f} to only {last:.3f}"
    assert 0 <= kl < 4.5, f"KL to the reference {kl:.3f} nats/token"
    return first, last, kl


def test_grpo_learns_the_rule_reward(tiny_model_dir, tmp_path):
    records = _run(tiny_model_dir, tmp_path, "grpo", 30, 6e-3,
                   {"num_generations": 8, "prompts_per_step": 4, "max_new_tokens": 8, "kl_coef": 0.1})
    print("grpo reward %.3f -> %.3f, KL %.3f" % _check_learned(records, rise=0.3))
    assert (tmp_path / "model" / "config.json").exists() and (tmp_path / "reward_mean.png").exists()


def test_ppo_learns_the_rule_reward(tiny_model_dir, tmp_path):
    records = _run(tiny_model_dir, tmp_path, "ppo", 24, 6e-3,
                   {"prompts_per_step": 16, "max_new_tokens": 8, "kl_coef": 0.02, "target_kl": 2.0,
                    "kl_horizon": 40, "ppo_epochs": 4, "critic": "shared"})
    print("ppo reward %.3f -> %.3f, KL %.3f" % _check_learned(records, rise=0.2))
    assert all("value_loss" in r and "explained_variance" in r for r in records)
