"""Exact + MinHash-LSH dedup of a document dataset.

    python jobs/dedup.py --input DIR --output DIR [--config FILE] [key=value ...]
    ray job submit -- python jobs/dedup.py --input DIR --output DIR dedup.threshold=0.85

DIR holds document Parquet (DIR/data/*.parquet, or *.parquet directly). The output
gets data/ (kept rows), dropped/ (duplicates, each with drop_reason and duplicate_of),
accounting.json and a dataset card. Settings live under `dedup:` in the YAML file
(see curate.dedup.config.DedupConfig); a bare `key=value` of a dedup setting works too.
"""
from __future__ import annotations

import argparse
import json

if not __package__:  # run as `python jobs/X.py`: see jobs/_bootstrap.py
    import _bootstrap  # noqa: F401

from jobs.common import ConfigError, add_config_arguments, init_ray, load_config, log_dir_for, run_main  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    from dataclasses import fields

    from curate.dedup.config import DedupConfig
    from curate.dedup.runner import input_files, run_dedup_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="document dataset directory")
    parser.add_argument("--output", required=True, help="output dataset directory (replaced atomically)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)

    raw = load_config(args.config, args.overrides, defaults={"dedup": {}, "num_cpus": None})
    settings = {f.name for f in fields(DedupConfig)}
    dedup = dict(raw.pop("dedup") or {})
    dedup.update({k: raw.pop(k) for k in list(raw) if k in settings})
    unknown = sorted(set(raw) - {"num_cpus"})
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; dedup settings: {sorted(settings)}")
    config = DedupConfig.from_any(dedup)
    input_files(args.input)  # a missing or empty input fails here, before Ray starts

    init_ray(raw.get("num_cpus"), log_dir=log_dir_for(args.output), verbose=args.verbose)
    summary = run_dedup_dir(args.input, args.output, config)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    run_main(main)
