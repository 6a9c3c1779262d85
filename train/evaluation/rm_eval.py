"""Reward-model evaluation on a preference set: pairwise accuracy (chosen scored above rejected)
and margin (chosen minus rejected score), tokenized exactly as the rm stage trained."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from train.evaluation.runtime import RuntimeOptions


@dataclass
class RewardEvalOptions(RuntimeOptions):
    data: list[str] = field(default_factory=list)
    template: str | None = None   # None: the one the reward model was trained with (its card), else the tokenizer's
    max_length: int | None = None  # None: the reward model's cutoff_len

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.data, str):
            self.data = [self.data]
        if not self.data:
            raise ValueError("rm: no preference set given (--data PATH)")


def read_pairs(options: RewardEvalOptions) -> list[dict[str, Any]]:
    """Preference rows (our Parquet schema, or TRL prompt/chosen/rejected JSON/JSONL)."""
    from pathlib import Path

    from train.preference_data import read_preference_file

    rows: list[dict[str, Any]] = []
    for path in options.data:
        if not Path(path).exists():
            raise FileNotFoundError(f"rm: {path} does not exist")
        source = Path(path) / "data" if (Path(path) / "data").is_dir() else Path(path)
        rows += read_preference_file(source).to_pylist()
    if not rows:
        raise ValueError(f"rm: no preference pairs in {', '.join(options.data)}")
    return rows


def _conversation(row: dict[str, Any], response: str) -> list[dict[str, Any]]:
    messages = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
    if row.get("system"):
        messages = [{"role": "system", "content": row["system"]}] + messages
    return messages + [{"role": "assistant", "content": response}]


def pair_scores(reward_model, rows: Iterable[dict[str, Any]]) -> list[tuple[float, float]]:
    """(chosen score, rejected score) per pair, with a train.reward_model.RewardModel."""
    rows = list(rows)
    items = [c for row in rows for c in (_conversation(row, row["chosen"]), _conversation(row, row["rejected"]))]
    scores = reward_model.score(items)
    return [(scores[2 * i], scores[2 * i + 1]) for i in range(len(rows))]


def summarize(scores: Iterable[tuple[float, float]]) -> dict[str, Any]:
    """A tie (equal scores) counts as a miss: the model did not prefer the chosen response."""
    margins = np.array([c - r for c, r in scores], dtype=np.float64)
    if margins.size == 0:
        raise ValueError("rm: no pairs scored")
    return {"accuracy": float((margins > 0).mean()), "margin": float(margins.mean()),
            "margin_std": float(margins.std()), "ties": int((margins == 0).sum()), "pairs": int(margins.size)}


class RewardScorer:
    """Ray Data actor: one reward model, (chosen, rejected) scores per pair of a batch."""

    def __init__(self, model, threads: float, batch_size: int, template: str | None, max_length: int | None):
        import torch

        torch.set_num_threads(max(1, int(threads)))
        self.reward_model = load_reward_scorer(model, batch_size, template, max_length)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [json.loads(r) for r in batch["pair_json"]]
        scores = pair_scores(self.reward_model, rows)
        return {"id": np.array([r["id"] for r in rows], dtype=object),
                "chosen_score": np.array([c for c, _ in scores], dtype=np.float64),
                "rejected_score": np.array([r for _, r in scores], dtype=np.float64)}


def load_reward_scorer(model, batch_size: int = 8, template: str | None = None, max_length: int | None = None):
    """A train.reward_model.RewardModel for a resolved reward model (plain, or base + adapters)."""
    from train.reward_model import RewardModel, load_reward_model
    from train.run_models import load_model, load_tokenizer

    if not model.is_reward_model:
        raise ValueError(f"rm: {model.source} is not a reward model (train one with --stage rm)")
    if model.adapter is None:
        scorer = load_reward_model(model.base, batch_size=batch_size)
    else:  # a QLoRA rm run keeps adapters + head instead of a merged model
        scorer = RewardModel(load_model(model, merge=True), load_tokenizer(model), batch_size=batch_size,
                             template=model.template)
    if template is not None or max_length is not None:
        from train.preference_data import resolve_template

        if template is not None:
            scorer.template = resolve_template(template, scorer.tokenizer)
        if max_length is not None:
            scorer.max_length = max_length
    return scorer


def run_reward_eval(model, options: RewardEvalOptions) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import ray.data

    from train.evaluation.runtime import actor_pool_args

    rows = read_pairs(options)
    ds = ray.data.from_items([{"pair_json": json.dumps(r, default=str, ensure_ascii=False)} for r in rows])
    kwargs = {"model": model, "threads": options.num_cpus or 1, "batch_size": options.batch_size,
              "template": options.template, "max_length": options.max_length}
    out = ds.map_batches(RewardScorer, batch_format="numpy", **actor_pool_args(options, kwargs))
    scored = {}
    for batch in out.iter_batches(batch_format="numpy"):
        for pair_id, c, r in zip(batch["id"], batch["chosen_score"], batch["rejected_score"]):
            scored[str(pair_id)] = (float(c), float(r))
    if len(scored) != len(rows):
        raise RuntimeError(f"rm: {len(rows)} pairs sent, {len(scored)} scored (are pair ids unique?)")
    ordered = [scored[str(r["id"])] for r in rows]
    per_pair = [{"id": r["id"], "chosen_score": c, "rejected_score": s, "margin": c - s} for r, (c, s) in zip(rows, ordered)]
    return summarize(ordered), per_pair
