"""Train a model on Ray Train: stages pt / sft (and any stage registered in train.stages).

    python jobs/train.py --stage sft                      # tiny model, embedded sample
    python jobs/train.py --stage sft --model Qwen/Qwen2.5-0.5B --data DIR --output runs/sft \\
        --finetuning-type lora --num-workers 2 --deepspeed zero2 learning_rate=2e-4 lora_rank=16
    python jobs/train.py --config examples/sft.yaml --resume

Options come from --config YAML (flat keys, see train/args.py), then key=value
overrides, then the flags below. Under `ray job submit` the job joins that cluster.
"""
from __future__ import annotations

import argparse
import json
import sys

if not __package__:  # run as `python jobs/X.py`: see jobs/_bootstrap.py
    import _bootstrap  # noqa: F401

from jobs.common import add_config_arguments, init_ray, load_config, log_dir_for, run_main  # noqa: E402

# flag -> config key; a flag left unset does not override the YAML
FLAGS = {
    "stage": "stage", "model": "model", "data": "data", "output": "output", "num_workers": "num_workers",
    "use_gpu": "use_gpu", "deepspeed": "deepspeed", "resume": "resume", "from_scratch": "from_scratch",
    "model_config": "model_config", "finetuning_type": "finetuning_type", "template": "template",
    "max_steps": "max_steps",
}


def parse_args(argv=None) -> argparse.Namespace:
    from train.stages import stage_names

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--stage", help=" | ".join(stage_names()))
    parser.add_argument("--model", help="hub id, local path or 'tiny' (default)")
    parser.add_argument("--data", nargs="+", action="extend",
                        help="dataset paths or names, each optionally PATH:WEIGHT for the mix; repeatable "
                             "(default: the embedded sample)")
    parser.add_argument("--output", help="run directory (default runs/train)")
    parser.add_argument("--num-workers", type=int, dest="num_workers")
    parser.add_argument("--use-gpu", action="store_true", default=None, dest="use_gpu")
    parser.add_argument("--deepspeed", help="zero0 | zero2 | zero3 | zero2_offload | zero3_offload | a JSON path")
    parser.add_argument("--resume", action="store_true", default=None, help="continue the run in --output")
    parser.add_argument("--from-scratch", action="store_true", default=None, dest="from_scratch",
                        help="pt: random init from --model-config (or the model's config)")
    parser.add_argument("--model-config", dest="model_config", help="config.json (or its directory) for --from-scratch")
    parser.add_argument("--finetuning-type", dest="finetuning_type", help="full | freeze | lora | qlora")
    parser.add_argument("--template", help="chat template name (sft)")
    parser.add_argument("--max-steps", type=int, dest="max_steps")
    parser.add_argument("--reward-model", dest="reward_model",
                        help="ppo/grpo: a reward model from --stage rm (sets data_options.reward_model)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    from train.args import parse_train_config
    from train.launcher import TrainingRunError, preflight, run_training
    from train.run_outputs import RUN_CLOCK

    RUN_CLOCK.mark("imports")
    args = parse_args(argv)
    raw = load_config(args.config, args.overrides)
    for flag, key in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            raw[key] = value
    if args.reward_model:
        raw["data_options"] = {**(raw.get("data_options") or {}), "reward_model": args.reward_model}
    cfg = parse_train_config(raw)
    preflight(cfg)  # bad options fail here, before Ray starts
    RUN_CLOCK.mark("preflight")
    init_ray(log_dir=log_dir_for(cfg.launch.output, dataset=False), verbose=args.verbose)
    RUN_CLOCK.mark("ray_init")
    try:
        summary = run_training(cfg)
    except TrainingRunError as exc:  # a worker failed (e.g. NaN loss): one clear line, not a Ray traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    run_main(main)
