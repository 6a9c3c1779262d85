"""Scoring samples: a trained reward model in a Ray Data actor pool, or an LLM judge.

Both return, per (key, prompt, response), a score or a drop reason with the raw text,
so the preference and best-of-N builders treat them alike.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synth.judge import Judge

ScoreResult = tuple  # (score: float | None, reason: str | None, raw: str)


class _RewardModelActor:
    """One reward model per actor (loaded once), scoring a batch of conversations."""

    def __init__(self, path: str, batch_size: int):
        import torch
        from train.reward_model import load_reward_model

        torch.set_num_threads(1)
        self.rm = load_reward_model(path, batch_size=batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [json.loads(p) for p in batch["prompt_json"]]
        scores = self.rm.score_responses(prompts, list(batch["response"]))
        return {"key": batch["key"], "score": np.array(scores, dtype=np.float64)}


class RewardModelScorer:
    def __init__(self, path: str | Path, concurrency: int = 1, batch_size: int = 8, num_cpus: float = 1):
        self.path = str(path)
        if not (Path(self.path) / "config.json").exists():
            raise FileNotFoundError(f"reward model {self.path} is not a saved model (no config.json)")
        self.concurrency, self.batch_size, self.num_cpus = concurrency, batch_size, num_cpus

    @property
    def identity(self) -> str:
        return f"reward_model:{self.path}"

    def score(self, items: list[tuple[str, list[dict], str]]) -> list[ScoreResult]:
        import ray.data
        from ray.data import ActorPoolStrategy

        if not items:
            return []
        rows = [{"key": k, "prompt_json": json.dumps(m, ensure_ascii=False), "response": r} for k, m, r in items]
        ds = ray.data.from_items(rows).map_batches(
            _RewardModelActor, batch_size=self.batch_size, batch_format="numpy",
            compute=ActorPoolStrategy(size=self.concurrency), num_cpus=self.num_cpus,
            fn_constructor_kwargs={"path": self.path, "batch_size": self.batch_size})
        scores = {r["key"]: float(r["score"]) for r in ds.take_all()}
        return [(scores[k], None, "") for k, _, _ in items]


def make_scorer(reward_model: str | None, judge: Judge | None, **rm_kwargs):
    if bool(reward_model) == bool(judge):
        raise ValueError("give exactly one of --reward-model or --judge")
    return RewardModelScorer(reward_model, **rm_kwargs) if reward_model else judge
