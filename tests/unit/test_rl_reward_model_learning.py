"""ppo and grpo learn from a trained tiny reward model (reward source = that model), on CPU.

The reward model is trained by the rm stage's worker body (train.stages.rm.run_reward_model:
the HF Trainer with the pairwise loss, saved by save_reward_model) on preference pairs whose
responses look like the untrained policy's (random ordinary tokens) and differ only in how
often the word "the" appears: chosen has 1-3 more. It must rank held-out pairs correctly
(accuracy >= 0.9) before the RL runs start.

The RL runs score with the reward model alone; the built-in rule reward (share of words that
are "the") rides along with weight 0, so its mean is logged without steering anything. Passing:
- the reward model's mean score over the last 5 steps is at least `rise` above the first 5
  (ppo 1.0, grpo 1.0 reward-model units; the held-out chosen-rejected margin is about 3 units);
- the rule reward rises too (>= 0.1): the policy learned what the preferences asked for,
  not some other quirk of the reward model;
- the mean per-token KL to the reference over the last 5 steps stays below 4.5 nats.
"""
from __future__ import annotations

import json
import random

import pytest
import torch

from train.args import parse_train_config
from train.rl.default import TARGET_WORD, default_prompts
from train.rl.loop import RLLoop
from train.rl.options import rl_options
from train.rl.prompts import tokenize_prompts

pytestmark = pytest.mark.slow

RULE_REWARD = "train.rl.default:target_word_reward"
RM_STEPS = 30


def _words_like_policy_samples(tokenizer, rng: random.Random) -> list[str]:
    """The words of a few random ordinary tokens decoded: what the untrained tiny policy says."""
    special = set(tokenizer.all_special_ids)
    while True:
        ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randint(3, 8))]
        words = tokenizer.decode([i for i in ids if i not in special]).split()
        if words and TARGET_WORD not in (w.lower() for w in words):
            return words


def _with_target(words: list[str], count: int, rng: random.Random) -> str:
    words = list(words)
    for _ in range(count):
        words.insert(rng.randint(0, len(words)), TARGET_WORD)
    return " ".join(words)


def target_word_pairs(tokenizer, n: int, seed: int) -> list[dict]:
    """Preference rows: the same words, chosen with more "the" than rejected."""
    rng = random.Random(seed)
    rows = []
    for i, prompt in enumerate(default_prompts(n, seed=seed)):
        words = _words_like_policy_samples(tokenizer, rng)
        fewer = rng.randint(0, 2)
        more = fewer + rng.randint(1, 3)
        rows.append({"id": f"the-{seed}-{i}", "prompt": [{**prompt["prompt"][0], "tool_calls": None}],
                     "chosen": _with_target(words, more, rng), "rejected": _with_target(words, fewer, rng),
                     "source": "tests.target_word_pairs"})
    return rows


@pytest.fixture(scope="module")
def target_word_reward_model(tiny_model_dir, tmp_path_factory):
    """A tiny reward model trained to prefer responses that say "the" more; returns its directory."""
    from schemas.validate import table_from_rows
    from train.model_loading import load_tokenizer
    from train.preference_data import tokenize_preferences
    from train.reward_model import load_reward_model
    from train.stages.rm import run_reward_model

    torch.set_num_threads(2)
    run_dir = tmp_path_factory.mktemp("rm")
    cfg = parse_train_config({"model": str(tiny_model_dir), "stage": "rm", "max_steps": RM_STEPS,
                              "per_device_batch_size": 16, "learning_rate": 2e-3, "lr_scheduler": "constant",
                              "cutoff_len": 96, "save_steps": 1000, "logging_steps": 10})
    tokenizer = load_tokenizer(cfg.model)
    pairs = tokenize_preferences(table_from_rows(target_word_pairs(tokenizer, 640, seed=1), "preference"),
                                 tokenizer, cutoff_len=96).examples
    run_reward_model(cfg, lambda: pairs, run_dir, max_steps=RM_STEPS)

    reward_model = load_reward_model(run_dir / "model")
    held_out = target_word_pairs(tokenizer, 64, seed=2)
    chosen = reward_model.score_responses([r["prompt"] for r in held_out], [r["chosen"] for r in held_out])
    rejected = reward_model.score_responses([r["prompt"] for r in held_out], [r["rejected"] for r in held_out])
    accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(held_out)
    margin = sum(c - r for c, r in zip(chosen, rejected)) / len(held_out)
    print(f"reward model: held-out accuracy {accuracy:.2f}, mean margin {margin:.2f}")
    assert accuracy >= 0.9, f"the reward model ranks only {accuracy:.0%} of held-out pairs correctly"
    return run_dir / "model"


def _run(tiny_model_dir, tmp_path, reward_model, stage: str, steps: int, learning_rate: float,
         options: dict) -> list[dict]:
    torch.set_num_threads(2)
    cfg = parse_train_config({"model": str(tiny_model_dir), "stage": stage, "max_steps": steps,
                              "learning_rate": learning_rate, "lr_scheduler": "constant", "warmup_ratio": 0.0,
                              "save_steps": 1000, "data_options": {
                                  "reward_model": [str(reward_model)], "reward_function": [RULE_REWARD],
                                  "reward_weights": [1.0, 0.0], **options}})
    from train.model_loading import load_tokenizer

    prompts, _ = tokenize_prompts([(r["id"], r) for r in default_prompts()], load_tokenizer(cfg.model), 200)
    RLLoop(cfg, rl_options(cfg.data.data_options, stage), prompts, tmp_path, steps).run()
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def _mean(records: list[dict], key: str) -> float:
    return sum(r[key] for r in records) / len(records)


def _check_learned(records: list[dict], rise: float) -> dict[str, float]:
    rule = f"reward/{RULE_REWARD}"
    seen = {"rm_first": _mean(records[:5], "reward_mean"), "rm_last": _mean(records[-5:], "reward_mean"),
            "rule_first": _mean(records[:5], rule), "rule_last": _mean(records[-5:], rule),
            "kl": _mean(records[-5:], "kl")}
    assert seen["rm_last"] >= seen["rm_first"] + rise, f"reward-model score rose too little: {seen}"
    assert seen["rule_last"] >= seen["rule_first"] + 0.1, f"the policy did not learn to say {TARGET_WORD!r}: {seen}"
    assert 0 <= seen["kl"] < 4.5, f"KL to the reference: {seen}"
    return seen


def test_grpo_learns_from_a_trained_reward_model(target_word_reward_model, tiny_model_dir, tmp_path):
    records = _run(tiny_model_dir, tmp_path, target_word_reward_model, "grpo", 30, 6e-3,
                   {"num_generations": 8, "prompts_per_step": 4, "max_new_tokens": 8, "kl_coef": 0.1})
    print("grpo", {k: round(v, 3) for k, v in _check_learned(records, rise=1.0).items()})


def test_ppo_learns_from_a_trained_reward_model(target_word_reward_model, tiny_model_dir, tmp_path):
    records = _run(tiny_model_dir, tmp_path, target_word_reward_model, "ppo", 24, 6e-3,
                   {"prompts_per_step": 16, "max_new_tokens": 8, "kl_coef": 0.02, "target_kl": 2.0,
                    "kl_horizon": 40, "ppo_epochs": 4, "critic": "shared"})
    print("ppo", {k: round(v, 3) for k, v in _check_learned(records, rise=1.0).items()})
