"""Synthesize SFT and preference sets.

  python jobs/synth.py instructions          # embedded seeds + tiny model: a small demo run
  python jobs/synth.py preferences           # embedded prompts, tiny policy, tiny reward model
  python jobs/synth.py instructions --seeds seeds.jsonl --backend http:MODEL@http://host:8000/v1 --num 500 --output out/si
  python jobs/synth.py preferences --prompts prompts.jsonl --policy local:PATH --n 4 --judge http:M@URL --output out/pref
  python jobs/synth.py best-of-n --prompts DIR --policy vllm:MODEL --n 8 --reward-model RM --rounds 2 --output out/bon

Backends: local:PATH, vllm:MODEL, http:MODEL@URL (API key from $OPENAI_API_KEY, or the
variable named by backend.api_key_env). Left out, seeds, prompts, backend, policy and
reward model default to the embedded ones (synth/tiny_defaults.py, built once and cached
under $RAYMILL_CACHE). `--config FILE` and `key=value` overrides set the
rest (self_instruct.*, preferences.*, best_of_n.*, backend.*, judge.*, reward_model.*).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if not __package__:  # run as `python jobs/X.py`: see jobs/_bootstrap.py
    import _bootstrap  # noqa: F401

from jobs.common import add_config_arguments, deep_merge, init_ray, load_config, log_dir_for, run_main  # noqa: E402

DEFAULTS = {
    "backend": {"concurrency": 1, "max_retries": 3, "batch_size": 8, "api_key_env": "OPENAI_API_KEY"},
    "self_instruct": {},
    "preferences": {},
    "best_of_n": {},
    "judge": {"sampling": {}},
    "reward_model": {"concurrency": 1, "batch_size": 8},
    "ray": {"num_cpus": None},
}
DEFAULT_OUTPUT = "output/synth/{}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("instructions", help="self-instruct an SFT set from seed tasks")
    ins.add_argument("--seeds", help="seed tasks JSONL (default: the embedded seed tasks)")
    ins.add_argument("--backend", help="generator backend spec (default: the tiny model trained on the seeds)")
    ins.add_argument("--num", type=int, help="number of instructions to generate")
    ins.add_argument("--output", default=DEFAULT_OUTPUT.format("instructions"))
    ins.add_argument("--checkpoint-dir", help="round checkpoints (default: .<output>.checkpoint beside the output)")
    ins.add_argument("--keep-checkpoint", action="store_true")
    for name, helptext in (("preferences", "build a preference set"), ("best-of-n", "best-of-N SFT set")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--prompts", help="prompt/sft dataset directory or JSONL (default: the embedded seed prompts)")
        p.add_argument("--policy", help="backend spec of the model to sample (default: the tiny model)")
        p.add_argument("--n", type=int)
        p.add_argument("--temperature", type=float)
        group = p.add_mutually_exclusive_group()
        group.add_argument("--reward-model", help="reward model directory (jobs/train.py --stage rm; "
                                                  "default: the tiny reward model)")
        group.add_argument("--judge", help="backend spec of the judge LLM")
        p.add_argument("--output", default=DEFAULT_OUTPUT.format(name))
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

    if args.judge:
        backend = make_backend(args.judge, **config["backend"])
        backend.check_ready()
        return Judge(backend, sampling=config["judge"].get("sampling"))
    if not args.reward_model:
        from synth.tiny_defaults import default_seeds_file, reward_model_path

        args.reward_model = str(reward_model_path(default_seeds_file()))
    return RewardModelScorer(args.reward_model, **config["reward_model"])


def _instructions(args, config) -> None:
    from dataclasses import asdict

    from synth.backends import make_backend
    from synth.run_instructions import run_instructions
    from synth.seeds import load_seeds
    from synth.self_instruct import SelfInstructConfig
    from synth.tiny_defaults import TINY_SELF_INSTRUCT, default_seeds_file, format_model_path

    seeds = args.seeds or str(default_seeds_file())
    load_seeds(seeds)  # a malformed seed line fails here, naming the line, before Ray starts
    si = dict(config["self_instruct"])
    if args.backend is None:
        args.backend = f"local:{format_model_path(seeds)}"
        si = deep_merge(TINY_SELF_INSTRUCT, si)  # settings the tiny model was trained for, unless overridden
    if args.num is not None:
        si["num_instructions"] = args.num
    si_config = SelfInstructConfig.from_dict(si)
    backend = make_backend(args.backend, **config["backend"])
    backend.check_ready()  # an unreachable server fails here, before Ray starts and before any round
    init_ray(config["ray"].get("num_cpus"), log_dir=log_dir_for(args.output), verbose=args.verbose)
    # The card records the settings in effect (tiny-model profile included), not just the overrides.
    job_config = {**config, "self_instruct": asdict(si_config), "seeds": str(seeds), "backend_spec": args.backend}
    run_instructions(seeds, backend, args.output, si_config, checkpoint_dir=args.checkpoint_dir,
                     keep_checkpoint=args.keep_checkpoint, job_config=job_config)
    print(f"wrote {args.output}")


def _sampled(args, config) -> None:
    from dataclasses import asdict

    from synth.backends import make_backend
    from synth.best_of_n import BestOfNConfig, best_of_n, load_previous
    from synth.output import write_dataset
    from synth.preferences import PreferenceConfig, build_preferences
    from synth.prompt_sources import load_prompts
    from synth.tiny_defaults import TINY_SAMPLING, default_prompts_file, default_seeds_file, format_model_path

    preferences = args.command == "preferences"
    section = "preferences" if preferences else "best_of_n"
    settings = dict(config[section])
    if args.prompts is None:
        args.prompts = str(default_prompts_file(default_seeds_file()))
    prompts = load_prompts(args.prompts, args.limit)
    if args.policy is None:
        args.policy = f"local:{format_model_path(default_seeds_file())}"
        settings.setdefault("sampling", dict(TINY_SAMPLING))
    if args.n is not None:
        settings["n"] = args.n
    if args.temperature is not None:
        settings["sampling"] = {**settings.get("sampling", {"top_p": 1.0, "max_tokens": 512}), "temperature": args.temperature}
    if preferences:
        settings.update({k: v for k, v in (("pairing", args.pairing), ("min_margin", args.min_margin)) if v is not None})
        cfg = PreferenceConfig(**settings)
    else:
        if args.rounds is not None:
            settings["rounds"] = args.rounds
        cfg = BestOfNConfig(**settings)
    previous = load_previous(args.previous) if not preferences and args.previous else None
    policy = make_backend(args.policy, **config["backend"])
    policy.check_ready()
    scorer = _scorer(args, config)  # checks the judge server too: every input is checked before Ray starts
    init_ray(config["ray"].get("num_cpus"), log_dir=log_dir_for(args.output), verbose=args.verbose)
    if preferences:
        rows, dropped, stages, run = build_preferences(prompts, policy, scorer, cfg)
    else:
        rows, dropped, stages, run = best_of_n(prompts, policy, scorer, cfg, previous)
    # The card records the settings in effect (tiny-model sampling included), not just the overrides.
    config = {**config, section: asdict(cfg), "policy_spec": args.policy, "scorer": args.reward_model or args.judge}
    run.update({"job": f"synth.{section}", "inputs": [str(Path(args.prompts).resolve())], "config": config,
                "models": [policy.identity, scorer.identity]})
    write_dataset(args.output, "preference" if preferences else "sft", rows, dropped, stages, run)
    print(f"wrote {args.output}: {len(rows)} rows, {len(dropped)} dropped")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    config = load_config(args.config, args.overrides, DEFAULTS)
    if args.command == "instructions":
        _instructions(args, config)
    else:
        _sampled(args, config)


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
