"""Evaluate a trained model on Ray Data: results.json, results.md, index.html and items.parquet
in the output directory (default RUN/eval/TASK for a run directory, else out/eval/TASK).

    python jobs/eval.py ppl --model runs/pt --data out/heldout          # perplexity, bits per byte
    python jobs/eval.py choice --model runs/sft --data ceval/ k_shot=5 split=val
    python jobs/eval.py rm --model runs/rm --data out/prefs             # pairwise accuracy, margin
    python jobs/eval.py judge --model runs/dpo --model-b runs/sft --data prompts.jsonl \\
        --judge http:judge@http://localhost:8001/v1                     # win rate of A over B

Task options come from --config YAML (flat keys), then key=value overrides, then the flags.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

if not __package__:  # run as `python jobs/X.py`: see jobs/_bootstrap.py
    import _bootstrap  # noqa: F401

from jobs.common import add_config_arguments, init_ray, load_config, run_main  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", help="ppl | choice | rm | judge")
    add_config_arguments(parser)
    parser.add_argument("--model", help="run directory, model directory, LoRA adapter directory, hub id or 'tiny'")
    parser.add_argument("--adapter", help="LoRA adapter (or LoRA run) on top of --model")
    parser.add_argument("--model-b", dest="model_b", help="judge: the model A is compared with")
    parser.add_argument("--adapter-b", dest="adapter_b", help="judge: LoRA adapter on top of --model-b")
    parser.add_argument("--judge", help="judge: the judging backend (local:PATH, vllm:MODEL, http:MODEL@URL)")
    parser.add_argument("--data", nargs="+", help="input files or dataset directories")
    parser.add_argument("--output", help="output directory")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the flags
    if args.data:
        # `--data A B key=value`: nargs="+" swallows the overrides that follow; hand them back.
        overrides = [d for d in args.data if "=" in d and not Path(d).exists()]
        args.data = [d for d in args.data if d not in overrides] or None
        args.overrides = list(args.overrides) + overrides
    return args


def tasks() -> dict:
    from synth.judge_eval import JUDGE_TASK
    from train.evaluation.tasks import train_tasks

    return {**train_tasks(), JUDGE_TASK.name: JUDGE_TASK}


def main(argv=None) -> None:
    from train.evaluation.tasks import execute, prepare

    args = parse_args(argv)
    known = tasks()
    if args.task not in known:
        raise ValueError(f"unknown eval task {args.task!r}; choose one of {', '.join(known)}")
    task = known[args.task]
    raw = load_config(args.config, args.overrides)
    if args.data:
        raw["data"] = args.data if len(args.data) > 1 or task.name != "choice" else args.data[0]
    models = task.resolve_models(args.model, args.adapter, args.model_b, args.adapter_b, args.judge)
    options = prepare(task, raw, models)  # bad input fails here, before Ray starts
    init_ray()
    output, metrics = execute(task, options, models, args.output)
    print(json.dumps({"output": str(output), "metrics": metrics}, indent=2, default=str))


if __name__ == "__main__":
    run_main(main)
