"""Synthesize SFT and preference sets.

  python jobs/synth.py instructions --seeds seeds.jsonl --backend http:MODEL@http://host:8000/v1 --num 500 --output out/si
  python jobs/synth.py preferences --prompts prompts.jsonl --policy local:PATH --n 4 --judge http:M@URL --output out/pref
  python jobs/synth.py best-of-n --prompts DIR --policy vllm:MODEL --n 8 --reward-model RM --rounds 2 --output out/bon

Backends: local:PATH, vllm:MODEL, http:MODEL@URL (API key from $OPENAI_API_KEY, or the
variable named by backend.api_key_env). `--config FILE` and `key=value` overrides set the
rest (self_instruct.*, preferences.*, best_of_n.*, backend.*, judge.*, reward_model.*).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import add_config_arguments, init_ray, load_config, run_main  # noqa: E402

DEFAULTS = {
    "backend": {"concurrency": 1, "max_retries": 3, "batch_size": 8, "api_key_env": "OPENAI_API_KEY"},
    "self_instruct": {},
    "preferences": {},
    "best_of_n": {},
    "judge": {"sampling": {}},
    "reward_model": {"concurrency": 1, "batch_size": 8},
    "ray": {"num_cpus": None},
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("instructions", help="self-instruct an SFT set from seed tasks")
    ins.add_argument("--seeds", required=True)
    ins.add_argument("--backend", required=True)
    ins.add_argument("--num", type=int, help="number of instructions to generate")
    ins.add_argument("--output", required=True)
    ins.add_argument("--checkpoint-dir", help="round checkpoints (default: .<output>.checkpoint beside the output)")
    ins.add_argument("--keep-checkpoint", action="store_true")
    for name, helptext in (("preferences", "build a preference set"), ("best-of-n", "best-of-N SFT set")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--prompts", required=True, help="prompt/sft dataset directory or JSONL")
        p.add_argument("--policy", required=True, help="backend spec of the model to sample")
        p.add_argument("--n", type=int)
        p.add_argument("--temperature", type=float)
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--reward-model", help="reward model directory (jobs/train.py --stage rm)")
        group.add_argument("--judge", help="backend spec of the judge LLM")
        p.add_argument("--output", required=True)
        p.add_argument("--limit", type=int, help="use only the first N prompts")
        if name == "preferences":
            p.add_argument("--pairing", choices=["best_vs_worst", "best_vs_random"])
            p.add_argument("--min-margin", type=float)
        else:
            p.add_argument("--rounds", type=int)
            p.add_argument("--previous", help="an earlier best-of-N output to accumulate with")
    for p in sub.choices.values():
        add_config_arguments(p)
    return parser


def _scorer(args, config):
    from synth.backends import make_backend
    from synth.judge import Judge
    from synth.scoring import RewardModelScorer

    if args.reward_model:
        return RewardModelScorer(args.reward_model, **config["reward_model"])
    backend = make_backend(args.judge, **config["backend"])
    backend.check_ready()
    return Judge(backend, sampling=config["judge"].get("sampling"))


def main(argv: list[str] | None = None) -> None:
    from synth.backends import make_backend

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    config = load_config(args.config, args.overrides, DEFAULTS)
    init_ray(config["ray"].get("num_cpus"))
    if args.command == "instructions":
        from synth.run_instructions import run_instructions
        from synth.self_instruct import SelfInstructConfig

        si = dict(config["self_instruct"])
        if args.num is not None:
            si["num_instructions"] = args.num
        backend = make_backend(args.backend, **config["backend"])
        run_instructions(args.seeds, backend, args.output, SelfInstructConfig.from_dict(si),
                         checkpoint_dir=args.checkpoint_dir, keep_checkpoint=args.keep_checkpoint, job_config=config)
        print(f"wrote {args.output}")
        return
    from synth.output import write_dataset
    from synth.prompt_sources import load_prompts

    prompts = load_prompts(args.prompts, args.limit)
    policy = make_backend(args.policy, **config["backend"])
    policy.check_ready()
    scorer = _scorer(args, config)
    section = "preferences" if args.command == "preferences" else "best_of_n"
    settings = dict(config[section])
    if args.n is not None:
        settings["n"] = args.n
    if args.temperature is not None:
        settings["sampling"] = {**settings.get("sampling", {"top_p": 1.0, "max_tokens": 512}), "temperature": args.temperature}
    if args.command == "preferences":
        from synth.preferences import PreferenceConfig, build_preferences

        if args.pairing:
            settings["pairing"] = args.pairing
        if args.min_margin is not None:
            settings["min_margin"] = args.min_margin
        rows, dropped, stages, run = build_preferences(prompts, policy, scorer, PreferenceConfig(**settings))
        kind = "preference"
    else:
        from synth.best_of_n import BestOfNConfig, best_of_n, load_previous

        if args.rounds is not None:
            settings["rounds"] = args.rounds
        previous = load_previous(args.previous) if args.previous else None
        rows, dropped, stages, run = best_of_n(prompts, policy, scorer, BestOfNConfig(**settings), previous)
        kind = "sft"
    run.update({"job": f"synth.{section}", "inputs": [str(Path(args.prompts).resolve())], "config": config,
                "models": [policy.identity, scorer.identity]})
    write_dataset(args.output, kind, rows, dropped, stages, run)
    print(f"wrote {args.output}: {len(rows)} rows, {len(dropped)} dropped")


def _main() -> None:
    from synth.backends import BackendUnavailable
    from synth.checkpoint import CheckpointMismatch

    try:
        run_main(main)
    except (BackendUnavailable, CheckpointMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    _main()
