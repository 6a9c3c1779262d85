"""Win rate of model A over model B on a prompt set, judged by an LLM through a synth backend.

Both models answer every prompt; the judge compares the two answers twice, A first and B
first. A model wins a prompt only when both orders prefer it; when the orders disagree the
judge's position bias decided, so the prompt is a tie. Optionally the judge also grades
each answer 1-10 on its own, averaged per category (the FastChat / BELLE practice).
    win rate of A = (A wins + ties / 2) / decided prompts
A prompt whose answer or verdict failed (server error, unparseable verdict) is counted as
invalid and left out of the rate.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from synth.backends import Backend, ChatRequest, SamplingParams, make_backend
from synth.judge import Judge
from synth.prompt_sources import Prompt, load_prompts, with_system
from train.evaluation.tasks import EvalTask

OUTCOMES = ("a", "b", "tie", "invalid")
BACKEND_PREFIXES = ("local:", "vllm:", "http:")
_VERDICT_OUTCOME = {None: "a", "judge_prefers_rejected": "b", "judge_orders_disagree": "tie"}


@dataclass
class JudgeEvalOptions:
    data: list[str] = field(default_factory=list)
    category_column: str = "category"   # prompts without it fall in "all"
    max_prompts: int | None = None
    sampling: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 256})  # A and B
    judge_sampling: dict[str, Any] = field(default_factory=dict)
    scores: bool = True                 # also grade each answer 1-10
    batch_size: int = 8                 # local backends: rows per generate call
    concurrency: int = 1                # local backends: actors per model

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if not self.data:
            raise ValueError("judge: no prompt set given (--data PATH)")
        SamplingParams.from_config(self.sampling)
        SamplingParams.from_config({"temperature": 0.0, **self.judge_sampling})


# ---------------------------------------------------------------- inputs
def load_categorised_prompts(options: JudgeEvalOptions) -> list[tuple[Prompt, str]]:
    """(prompt, category) pairs. load_prompts makes one prompt per row, in file order, so the
    category is read from `category_column` of the row at the same position."""
    from train.evaluation.inputs import data_files
    from train.formats import iter_file_rows

    out: list[tuple[Prompt, str]] = []
    for path in options.data:
        prompts = load_prompts(path)
        rows = [r for f in data_files(path, "judge") for r in iter_file_rows(f)]
        if len(rows) != len(prompts):
            raise ValueError(f"judge: {path} has {len(rows)} rows but {len(prompts)} prompts")
        out += [(p, str(r.get(options.category_column) or "all")) for p, r in zip(prompts, rows)]
    return out[: options.max_prompts] if options.max_prompts else out


def answerer_spec(model: str | None, adapter: str | None) -> Any:
    """A backend spec string as it is, else a train.run_models.ResolvedModel."""
    from train.run_models import resolve_model

    if model and model.startswith(BACKEND_PREFIXES):
        if adapter:
            raise ValueError(f"--adapter applies to a model path, not to the backend {model}")
        return model
    return resolve_model(model or "tiny", adapter)


def backend_for(spec: Any, options: JudgeEvalOptions) -> Backend:
    """The backend that serves a model. A run or adapter directory (given as a path or as
    local:PATH) is merged once (train.run_models) so the local transformers backend loads it."""
    from train.run_models import ResolvedModel, merged_model_dir

    if isinstance(spec, ResolvedModel):
        spec = f"local:{merged_model_dir(spec)}"
    elif not spec.startswith(("vllm:", "http:")):
        spec = f"local:{merged_model_dir(spec[len('local:'):] if spec.startswith('local:') else spec)}"
    backend = make_backend(spec, batch_size=options.batch_size, concurrency=options.concurrency)
    backend.check_ready()
    return backend


# ---------------------------------------------------------------- judging
def answers(backend: Backend, prompts: Sequence[Prompt], params: SamplingParams) -> dict[str, tuple[str | None, str | None]]:
    """prompt id -> (answer text, error)."""
    requests = [ChatRequest(p.id, with_system(p)) for p in prompts]
    return {c.request_id: (c.text if c.ok else None, c.error) for c in backend.generate(requests, params)}


def judge_prompts(judge: Judge, prompts: Sequence[tuple[Prompt, str]], answers_a: dict, answers_b: dict,
                  scores: bool) -> list[dict[str, Any]]:
    """One row per prompt: both answers, the two-order outcome and (optionally) both grades."""
    rows = []
    for prompt, category in prompts:
        (text_a, err_a), (text_b, err_b) = answers_a[prompt.id], answers_b[prompt.id]
        rows.append({"id": prompt.id, "category": category, "prompt": prompt.messages[-1]["content"],
                     "answer_a": text_a, "answer_b": text_b, "outcome": "invalid",
                     "reason": err_a or err_b, "verdicts": None, "score_a": None, "score_b": None})
    ready = [r for r in rows if r["answer_a"] is not None and r["answer_b"] is not None]
    by_id = {p.id: p for p, _ in prompts}
    # verify_pairs asks A-vs-B and B-vs-A; keeping the pair means both orders chose A.
    verdicts = judge.verify_pairs([(r["id"], with_system(by_id[r["id"]]), r["answer_a"], r["answer_b"]) for r in ready])
    for row, verdict in zip(ready, verdicts):
        row["verdicts"] = verdict.raw
        if verdict.reason in _VERDICT_OUTCOME:
            row["outcome"], row["reason"] = _VERDICT_OUTCOME[verdict.reason], None
        else:
            row["reason"] = verdict.reason
    if scores and ready:
        items = [(f"{r['id']}|{side}", with_system(by_id[r["id"]]), r[f"answer_{side}"]) for r in ready for side in "ab"]
        graded = judge.score(items)
        for i, row in enumerate(ready):
            row["score_a"], row["score_b"] = graded[2 * i][0], graded[2 * i + 1][0]
    return rows


def tally(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts, A's win rate, and mean grades: over all prompts and per category."""
    def summary(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
        counts = {o: sum(r["outcome"] == o for r in group) for o in OUTCOMES}
        decided = counts["a"] + counts["b"] + counts["tie"]
        out: dict[str, Any] = {"prompts": len(group), "wins_a": counts["a"], "wins_b": counts["b"],
                               "ties": counts["tie"], "invalid": counts["invalid"],
                               "win_rate_a": (counts["a"] + counts["tie"] / 2) / decided if decided else None}
        for side in "ab":
            graded = [r[f"score_{side}"] for r in group if r[f"score_{side}"] is not None]
            out[f"mean_score_{side}"] = sum(graded) / len(graded) if graded else None
        return out

    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_category[row["category"]].append(row)
    return {**summary(rows), "per_category": {c: summary(g) for c, g in sorted(by_category.items())}}


def run_judge_eval(options: JudgeEvalOptions, models: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    prompts = load_categorised_prompts(options)
    params = SamplingParams.from_config(options.sampling)
    plain = [p for p, _ in prompts]
    answers_a = answers(backend_for(models["model"], options), plain, params)
    answers_b = answers(backend_for(models["model_b"], options), plain, params)
    judge = Judge(backend_for(models["judge"], options), options.judge_sampling)
    rows = judge_prompts(judge, prompts, answers_a, answers_b, options.scores)
    metrics = tally(rows)
    metrics["judge"] = judge.identity
    return metrics, rows


# ---------------------------------------------------------------- the task for jobs/eval.py
def _resolve(model, adapter, model_b, adapter_b, judge) -> dict[str, Any]:
    if not model_b or not judge:
        raise ValueError("judge needs --model (A), --model-b (B) and --judge (a backend)")
    return {"model": answerer_spec(model, adapter), "model_b": answerer_spec(model_b, adapter_b), "judge": judge}


def _check(options: JudgeEvalOptions, models: dict[str, Any]) -> None:
    from synth.backends import parse_backend_spec

    for path in options.data:
        if not Path(path).exists():
            raise FileNotFoundError(f"judge: {path} does not exist")
    load_categorised_prompts(options)
    judge_spec = models["judge"]
    if isinstance(judge_spec, str) and not judge_spec.startswith(BACKEND_PREFIXES) and not Path(judge_spec).is_dir():
        raise ValueError(f"judge: --judge {judge_spec!r} is neither a backend (local:/vllm:/http:) nor a model directory")
    if isinstance(judge_spec, str) and judge_spec.startswith(BACKEND_PREFIXES):
        parse_backend_spec(judge_spec)


JUDGE_TASK = EvalTask("judge", JudgeEvalOptions, _check, lambda options, models: run_judge_eval(options, models),
                      models=("model", "model_b", "judge"), resolve=_resolve)
