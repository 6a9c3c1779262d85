"""Preference pairs: N samples per prompt -> scores (reward model or judge) -> pairs.

Pairs are best-vs-worst by default (or best-vs-random); ties, identical texts and
pairs under `min_margin` are dropped. With an LLM judge every pair is then checked in
both orders and kept only when both orders prefer the chosen response.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import schemas.funnel
from schemas.funnel import StageCount
from synth.backends import Backend, ChatRequest, GenerationStats, SamplingParams
from synth.judge import Judge
from synth.prompt_sources import Prompt, with_system

PAIRINGS = ("best_vs_worst", "best_vs_random")


@dataclass
class PreferenceConfig:
    n: int = 4
    sampling: dict = field(default_factory=lambda: {"temperature": 0.9, "top_p": 1.0, "max_tokens": 512})
    pairing: str = "best_vs_worst"
    min_margin: float = 0.0
    drop_truncated: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        if self.n < 2:
            raise ValueError(f"a preference pair needs n >= 2 samples per prompt, got {self.n}")


@dataclass
class Sample:
    prompt: Prompt
    index: int
    text: str
    score: float | None = None

    @property
    def key(self) -> str:
        return f"{self.prompt.id}#s{self.index}"


class Funnel(schemas.funnel.Funnel):
    """The shared row counter, plus the dropped rows with their reasons and raw text."""

    def __init__(self, stages: list[str]):
        super().__init__(stages)
        self.dropped: list[dict] = []

    def drop(self, stage: str, reason: str, item_id: str, text: str, raw: str = "", **extra: Any) -> None:
        super().drop(stage, reason)
        self.dropped.append({"id": item_id, "text": text, "drop_reason": reason, "drop_stage": stage,
                             "raw_text": raw, **extra})


def draw_samples(policy: Backend, prompts: list[Prompt], n: int, sampling: dict, seed: int, funnel: Funnel,
                 stats: GenerationStats, drop_truncated: bool, stage: str = "sample", tag: str = "") -> list[Sample]:
    """N completions per prompt; failed, empty and (optionally) truncated ones are dropped with a reason."""
    t0 = time.monotonic()
    params = SamplingParams.from_config({"seed": seed, **sampling, "n": n})
    by_id = {p.id + tag: p for p in prompts}
    completions = policy.generate([ChatRequest(p.id + tag, with_system(p)) for p in prompts], params)
    stats.requests += len(prompts)
    stats.add(completions)
    samples = []
    for c in completions:
        prompt = by_id[c.request_id]
        sid = f"{prompt.id}{tag}#s{c.sample_index}"
        if c.error:
            funnel.drop(stage, "http_error", sid, c.error, c.error, prompt_id=prompt.id)
        elif not c.text.strip():
            funnel.drop(stage, "empty_response", sid, c.text, c.text, prompt_id=prompt.id)
        elif drop_truncated and c.finish_reason == "length":
            funnel.drop(stage, "truncated_output", sid, c.text, c.text, prompt_id=prompt.id)
        else:
            funnel.keep(stage)
            samples.append(Sample(prompt, c.sample_index, c.text))
    funnel.timed(stage, time.monotonic() - t0)
    return samples


def score_samples(scorer, samples: list[Sample], funnel: Funnel, stage: str = "score", tag: str = "") -> list[Sample]:
    t0 = time.monotonic()
    results = scorer.score([(s.key + tag, with_system(s.prompt), s.text) for s in samples])
    scored = []
    for s, (score, reason, raw) in zip(samples, results):
        if score is None:
            funnel.drop(stage, reason or "unscored", s.key + tag, s.text, raw, prompt_id=s.prompt.id)
        else:
            s.score = score
            funnel.keep(stage)
            scored.append(s)
    funnel.timed(stage, time.monotonic() - t0)
    return scored


def build_pairs(samples: list[Sample], cfg: PreferenceConfig, funnel: Funnel, rng: random.Random,
                prompts: list[Prompt]) -> list[tuple[Sample, Sample]]:
    """One candidate pair per prompt (stage `pair`, counted per prompt)."""
    by_prompt: dict[str, list[Sample]] = {p.id: [] for p in prompts}
    for s in samples:
        by_prompt[s.prompt.id].append(s)
    pairs = []
    for p in prompts:
        group = sorted(by_prompt[p.id], key=lambda s: (-s.score, s.index))
        text = p.messages[-1]["content"]
        if len(group) < 2:
            funnel.drop("pair", "fewer_than_two_samples", p.id, text, prompt_id=p.id)
            continue
        best = group[0]
        other = group[-1] if cfg.pairing == "best_vs_worst" else rng.choice(group[1:])
        margin = best.score - other.score
        if margin == 0:
            funnel.drop("pair", "tie", p.id, text, prompt_id=p.id, score=best.score)
        elif margin < cfg.min_margin:
            funnel.drop("pair", "below_margin", p.id, text, prompt_id=p.id, margin=margin)
        elif best.text.strip() == other.text.strip():
            funnel.drop("pair", "identical_responses", p.id, text, prompt_id=p.id)
        else:
            funnel.keep("pair")
            pairs.append((best, other))
    return pairs


def preference_row(chosen: Sample, rejected: Sample, judge: str, policy: str, cfg: PreferenceConfig) -> dict:
    return {
        "id": f"{chosen.prompt.id}-pair", "prompt": chosen.prompt.messages, "system": chosen.prompt.system,
        "chosen": chosen.text, "rejected": rejected.text,
        "chosen_score": float(chosen.score), "rejected_score": float(rejected.score),
        "margin": float(chosen.score - rejected.score), "judge": judge, "source": f"synth.preferences:{policy}",
        "prompt_id": chosen.prompt.id, "pairing": cfg.pairing, "num_samples": cfg.n,
        "chosen_index": chosen.index, "rejected_index": rejected.index,
    }


def build_preferences(prompts: list[Prompt], policy: Backend, scorer, cfg: PreferenceConfig
                      ) -> tuple[list[dict], list[dict], list[StageCount], dict]:
    """Returns (preference rows, dropped rows, funnel, run info)."""
    judge = scorer if isinstance(scorer, Judge) else None
    stages = ["sample", "score", "pair"] + (["judge_both_orders"] if judge else [])
    funnel, stats = Funnel(stages), GenerationStats()
    samples = draw_samples(policy, prompts, cfg.n, cfg.sampling, cfg.seed, funnel, stats, cfg.drop_truncated)
    scored = score_samples(scorer, samples, funnel)
    pairs = build_pairs(scored, cfg, funnel, random.Random(cfg.seed), prompts)
    if judge:
        t0 = time.monotonic()
        verdicts = judge.verify_pairs([(c.prompt.id, with_system(c.prompt), c.text, r.text) for c, r in pairs])
        kept = []
        for (c, r), v in zip(pairs, verdicts):
            if v.keep:
                funnel.keep("judge_both_orders")
                kept.append((c, r))
            else:
                funnel.drop("judge_both_orders", v.reason, f"{c.prompt.id}-pair", c.text, v.raw,
                            prompt_id=c.prompt.id, rejected_text=r.text)
        funnel.timed("judge_both_orders", time.monotonic() - t0)
        pairs = kept
    rows = [preference_row(c, r, scorer.identity, policy.identity, cfg) for c, r in pairs]
    run = {"policy": policy.identity, "judge": scorer.identity, "generation": stats.as_dict(),
           "http_errors": stats.errors, "prompts": len(prompts)}
    return rows, funnel.dropped, funnel.as_list(), run
