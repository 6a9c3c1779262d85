"""The eval tasks of train (ppl, choice, rm) behind one shape, so `jobs/eval.py` checks the
options and inputs of any task before Ray starts, runs it and writes the same report.

synth's `judge` task (synth/judge_eval.py) has the same shape; train cannot import synth,
so the job adds it to this table.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from train.run_models import ResolvedModel


@dataclass(frozen=True)
class EvalTask:
    name: str
    options_cls: type
    # (options, models) -> None: raise a one-line error for bad input, before Ray starts
    check: Callable[[Any, dict[str, Any]], None]
    # (options, models) -> (metrics, per-item rows)
    run: Callable[[Any, dict[str, Any]], tuple[dict[str, Any], Any]]
    models: tuple[str, ...] = ("model",)  # which models the task needs
    # (model, adapter, model_b, adapter_b, judge) from the command line -> the `models` mapping
    resolve: Callable[..., dict[str, Any]] | None = None

    def resolve_models(self, model: str | None, adapter: str | None = None, model_b: str | None = None,
                       adapter_b: str | None = None, judge: str | None = None) -> dict[str, Any]:
        if self.resolve is not None:
            return self.resolve(model, adapter, model_b, adapter_b, judge)
        from train.run_models import resolve_model

        if model_b or judge:
            raise ValueError(f"{self.name} evaluates one model: --model-b and --judge are for the judge task")
        return {"model": resolve_model(model or "tiny", adapter)}


def _check_ppl(options, models) -> None:
    from train.evaluation.ppl import check_inputs

    check_inputs(options)


def _run_ppl(options, models):
    from train.evaluation.ppl import run_perplexity

    return run_perplexity(models["model"], options)


def _check_choice(options, models) -> None:
    from train.evaluation.choice import load_benchmark

    load_benchmark(options)


def _run_choice(options, models):
    from train.evaluation.choice import run_choice

    return run_choice(models["model"], options)


def _check_rm(options, models) -> None:
    from train.evaluation.rm_eval import read_pairs

    if not models["model"].is_reward_model:
        raise ValueError(f"rm: {models['model'].source} is not a reward model (train one with --stage rm)")
    read_pairs(options)


def _run_rm(options, models):
    from train.evaluation.rm_eval import run_reward_eval

    return run_reward_eval(models["model"], options)


def _options(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module(module), name)


def train_tasks() -> dict[str, EvalTask]:
    return {
        "ppl": EvalTask("ppl", _options("train.evaluation.ppl", "PerplexityOptions"), _check_ppl, _run_ppl),
        "choice": EvalTask("choice", _options("train.evaluation.choice", "ChoiceOptions"), _check_choice, _run_choice),
        "rm": EvalTask("rm", _options("train.evaluation.rm_eval", "RewardEvalOptions"), _check_rm, _run_rm),
    }


def default_output(task: str, models: dict[str, Any]) -> Path:
    """RUN/eval/TASK for a run directory, else out/eval/TASK."""
    model = models.get("model")
    if isinstance(model, ResolvedModel) and model.run_dir:
        return Path(model.run_dir) / "eval" / task
    return Path("out") / "eval" / task


def prepare(task: EvalTask, raw_options: dict[str, Any], models: dict[str, Any]):
    """Options from the config mapping (unknown keys name the closest valid one), then the
    task's input checks. Everything here runs before Ray starts."""
    from schemas.options import from_mapping

    options = from_mapping(task.options_cls, raw_options, f"eval {task.name}")
    task.check(options, models)
    return options


def execute(task: EvalTask, options, models: dict[str, Any], output: str | Path | None) -> tuple[Path, dict[str, Any]]:
    """Run a prepared task (Ray already started) and write its report; (output dir, metrics)."""
    from train.evaluation.report import write_report

    metrics, items = task.run(options, models)
    out = Path(output) if output else default_output(task.name, models)
    described = {k: (m.describe() if hasattr(m, "describe") else m) for k, m in models.items()}
    write_report(out, task.name, metrics, items, described, dataclasses.asdict(options))
    return out, metrics
