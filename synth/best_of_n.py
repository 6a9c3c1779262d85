"""Best-of-N rejection sampling for SFT (Llama-2 style).

Each round draws N responses per prompt, scores them, and a prompt's best response so
far replaces the previous one only when it scores higher; a `previous` best-of-N set
(an earlier run's output) seeds the running best, so rounds accumulate across runs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from schemas.funnel import StageCount
from synth.backends import Backend, GenerationStats
from synth.preferences import Funnel, Sample, draw_samples, score_samples
from synth.prompt_sources import Prompt


@dataclass
class BestOfNConfig:
    n: int = 4
    rounds: int = 1
    sampling: dict = field(default_factory=lambda: {"temperature": 0.9, "top_p": 1.0, "max_tokens": 512})
    drop_truncated: bool = True
    min_score: float | None = None   # a best response under this score is not kept
    seed: int = 0


def load_previous(path: str | Path) -> dict[str, dict]:
    """prompt_id -> previous best row of a best-of-N output directory."""
    from schemas.dataset_io import read_parquet_dir

    table = read_parquet_dir(Path(path) / "data", "sft")
    for name in ("prompt_id", "score"):
        if name not in table.column_names:
            raise ValueError(f"{path}: not a best-of-N output (column {name!r} is missing)")
    return {r["prompt_id"]: r for r in table.to_pylist()}


def best_of_n(prompts: list[Prompt], policy: Backend, scorer, cfg: BestOfNConfig,
              previous: dict[str, dict] | None = None) -> tuple[list[dict], list[dict], list[StageCount], dict]:
    funnel = Funnel(["sample", "score", "select_best"])
    stats = GenerationStats()
    best: dict[str, dict] = dict(previous or {})
    rng = random.Random(cfg.seed)
    for r in range(cfg.rounds):
        seed = rng.randrange(2**31)
        tag = f"@r{r}"
        samples = draw_samples(policy, prompts, cfg.n, cfg.sampling, seed, funnel, stats, cfg.drop_truncated, tag=tag)
        for s in score_samples(scorer, samples, funnel, tag=tag):
            _offer(best, s, r, scorer.identity, policy.identity, funnel, tag)
    rows = []
    for p in prompts:
        row = best.get(p.id)
        if row is None:
            continue
        if cfg.min_score is not None and row["score"] < cfg.min_score:
            funnel.drop("select_best", "below_min_score", row["id"], row["messages"][-1]["content"],
                        prompt_id=p.id, score=row["score"])
            continue
        rows.append(row)
    # select_best counts candidates (scored samples and previous bests): each ends as a prompt's
    # final best (kept) or as a drop.
    s = funnel.stage("select_best")
    s.kept = len(rows)
    s.rows_in = s.kept + sum(s.dropped.values())
    run = {"policy": policy.identity, "scorer": scorer.identity, "rounds": cfg.rounds,
           "previous_rows": len(previous or {}), "generation": stats.as_dict(), "http_errors": stats.errors}
    return rows, funnel.dropped, funnel.as_list(), run


def _offer(best: dict[str, dict], s: Sample, round_index: int, scorer: str, policy: str, funnel: Funnel,
           tag: str) -> None:
    """Keep `s` if it beats the prompt's best so far; the loser becomes a `not_best` drop."""
    row = {"id": s.prompt.id, "prompt_id": s.prompt.id, "system": s.prompt.system,
           "messages": s.prompt.messages + [{"role": "assistant", "content": s.text}],
           "score": float(s.score), "scorer": scorer, "round": round_index, "source": f"synth.best_of_n:{policy}"}
    current = best.get(s.prompt.id)
    if current is None or s.score > current["score"]:
        if current is not None:
            _drop_loser(funnel, current)
        best[s.prompt.id] = row
    else:
        funnel.drop("select_best", "not_best", f"{s.key}{tag}", s.text, prompt_id=s.prompt.id, score=float(s.score))


def _drop_loser(funnel: Funnel, row: dict) -> None:
    funnel.drop("select_best", "not_best", f"{row['id']}@r{row['round']}-replaced", row["messages"][-1]["content"],
                prompt_id=row["prompt_id"], score=row["score"])
