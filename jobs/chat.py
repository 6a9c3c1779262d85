"""Chat with a trained model in the terminal (tokens stream as they are generated).

    python jobs/chat.py --model runs/sft                      # a run directory (LoRA or full)
    python jobs/chat.py --model BASE --adapter runs/sft/model --template qwen --temperature 0.3
    python jobs/chat.py --model runs/dpo --system "Answer briefly." --max-new-tokens 128

In the chat: /reset, /system TEXT, /history, /help, /exit. Runs in this process; no Ray.
"""
from __future__ import annotations

import argparse
import sys

if not __package__:  # run as `python jobs/X.py`: see jobs/_bootstrap.py
    import _bootstrap  # noqa: F401

from jobs.common import add_config_arguments, load_config, run_main  # noqa: E402

SAMPLING_FLAGS = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--model", default="tiny", help="run directory, model or adapter directory, hub id or 'tiny'")
    parser.add_argument("--adapter", help="LoRA adapter (or LoRA run) on top of --model")
    parser.add_argument("--template", help="chat template name (default: the run's, else the tokenizer's own)")
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--dtype", default="fp32", help="fp32 | bf16 | fp16")
    parser.add_argument("--temperature", type=float, help="0 = greedy (default 0.7)")
    parser.add_argument("--top-p", type=float, dest="top_p")
    parser.add_argument("--top-k", type=int, dest="top_k")
    parser.add_argument("--max-new-tokens", type=int, dest="max_new_tokens")
    parser.add_argument("--repetition-penalty", type=float, dest="repetition_penalty")
    parser.add_argument("--seed", type=int)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    from schemas.options import from_mapping
    from train.chat import SamplingOptions, open_session, run_chat

    args = parse_args(argv)
    raw = load_config(args.config, args.overrides)  # sampling options; flags win
    raw.update({flag: getattr(args, flag) for flag in SAMPLING_FLAGS if getattr(args, flag) is not None})
    sampling = from_mapping(SamplingOptions, raw, "chat")
    session = open_session(args.model, args.adapter, args.template, args.system, sampling, args.dtype)
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    sys.exit(run_chat(session, input, write))


if __name__ == "__main__":
    run_main(main)
