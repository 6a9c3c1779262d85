"""Export a trained model as a plain transformers checkpoint (LoRA merged into the base).

    python jobs/export.py --model runs/sft --output exported/sft            # a LoRA run directory
    python jobs/export.py --model BASE --adapter runs/sft/model --output DIR dtype=bf16
    python jobs/export.py --model runs/sft --output DIR quantize=gptq       # needs gptqmodel and a GPU

Options (dtype, quantize, bits, template, max_shard_size) come from --config YAML, then
key=value overrides. Runs in this process; no Ray.
"""
from __future__ import annotations

import argparse
import json

if not __package__:  # run as `python jobs/X.py`: see jobs/_bootstrap.py
    import _bootstrap  # noqa: F401

from jobs.common import add_config_arguments, load_config, run_main  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--model", required=True, help="run directory, model or adapter directory, or base model")
    parser.add_argument("--adapter", help="LoRA adapter (or LoRA run) to merge into --model")
    parser.add_argument("--output", required=True, help="directory for the exported checkpoint")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    from schemas.options import from_mapping
    from train.export import ExportOptions, export_model
    from train.run_models import resolve_model

    args = parse_args(argv)
    options = from_mapping(ExportOptions, load_config(args.config, args.overrides), "export")
    summary = export_model(resolve_model(args.model, args.adapter), args.output, options)
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    run_main(main)
