"""Embedded default for `--stage ppo` / `--stage grpo` with no models and no data: a rule
reward and a small prompt set, so the tiny policy visibly learns in a few minutes on CPU.

The reward favours one target word: the share of the response's words that are "the"
(capped at 1). The untrained tiny model says it rarely, so the mean reward starts near
zero and rises as the policy learns to say it; the KL to the reference measures the price.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

TARGET_WORD = "the"
DEFAULT_REWARD_FUNCTION = "train.rl.default:target_word_reward"
_WORD = re.compile(r"\w+", re.UNICODE)

_TOPICS = ["the river", "a garden", "the city", "our team", "a student", "the weather", "this paper", "the data",
           "a short story", "the results", "a simple plan", "the question"]
_ASKS = ["Write one sentence about {}.", "Describe {} in a few words.", "Say something about {}.",
         "Tell me about {}.", "What do you know about {}?", "Explain {} briefly."]


def target_word_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Share of the response's words that are the target word (0 for an empty response)."""
    scores = []
    for response in responses:
        words = [w.lower() for w in _WORD.findall(response)]
        scores.append(sum(w == TARGET_WORD for w in words) / len(words) if words else 0.0)
    return scores


def default_prompts(n: int = 1200, seed: int = 0) -> list[dict]:
    """Chat prompts as prompt records ({id, prompt: [user message]}). 72 distinct texts, repeated:
    the count sets the default run's length (1200 prompts × 2 epochs / 8 per step = 300 steps)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        text = rng.choice(_ASKS).format(rng.choice(_TOPICS))
        rows.append({"id": f"default-prompt-{i}", "prompt": [{"role": "user", "content": text}]})
    return rows


def default_prompts_file() -> str:
    """The default prompts as JSONL in the cache (written once)."""
    from train.tiny import default_cache_dir

    path = Path(default_cache_dir()) / "rl_default_prompts_v2" / "prompts.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in default_prompts()), encoding="utf-8")
        tmp.replace(path)
    return str(path)
