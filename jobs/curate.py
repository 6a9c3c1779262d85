"""Curate a web crawl into labeled, filtered documents.

    python jobs/curate.py [--input PATH_OR_GLOB] [--output DIR] [--config FILE] [key=value ...]
    ray job submit -- python jobs/curate.py --input s3-or-shared-path --output DIR

With no --input it curates the embedded sample crawl (built once under the cache dir).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

if not __package__:  # run as `python jobs/X.py`: see jobs/_bootstrap.py
    import _bootstrap  # noqa: F401

from jobs.common import add_config_arguments, format_funnel, init_ray, load_config, log_dir_for, run_main  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    from curate.config import default_config, parse_config
    from curate.pipeline import DEFAULT_OUTPUT, prepare_embedded_ray, run_curate
    from curate.readers import InputError, check_inputs, expand_inputs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", help="input files, directories or globs (default: the sample crawl)")
    parser.add_argument("--output", help=f"output dataset directory (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--ppl-model", help="causal LM directory for the perplexity labels, 'reference' (the "
                        "embedded reference LM, the default) or 'tiny' (the project's tiny model)")
    parser.add_argument("--quality-model", help="fastText quality classifier (.bin from jobs/quality.py train) "
                        "or 'embedded' (the default)")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON instead of the table")
    add_config_arguments(parser)
    args = parser.parse_args(argv)

    raw = load_config(args.config, args.overrides, defaults=default_config())
    cache = Path(raw.get("cache_dir") or os.environ.get("RAYMILL_CACHE", "~/.cache/raymill")).expanduser()
    for flag, key in ((args.ppl_model, "perplexity"), (args.quality_model, "quality")):
        if flag:
            raw[key] = {**(raw.get(key) or {}), "enabled": True, "model_path": flag}
    perplexity = raw.get("perplexity") or {}
    if perplexity.get("model_path") == "tiny":
        # curate never imports train: the job resolves the project's tiny model for it.
        from train.tiny import tiny_model_path

        perplexity["model_path"] = str(tiny_model_path(cache / "tiny"))
    config = parse_config(raw)
    inputs = args.input or config.input
    if not inputs:
        from curate.sample_crawl import ensure_sample_crawl

        inputs = [str(ensure_sample_crawl(cache))]
    output = args.output or config.output or DEFAULT_OUTPUT
    try:
        # Missing, unreadable or unknown-format inputs fail here, before Ray starts, as
        # one line naming the file (run_main prints ValueErrors without a traceback).
        check_inputs(expand_inputs(inputs))
    except InputError as exc:
        raise ValueError(str(exc)) from None

    prepare_embedded_ray(config.runtime.num_cpus)
    logs = log_dir_for(output)
    started_ray = init_ray(config.runtime.num_cpus, log_dir=logs, verbose=args.verbose)
    # A Ray this job started stops while the card is drawn (run_curate); a joined cluster, or
    # the Ray of a caller that had one running, is left as it is.
    import ray

    summary = run_curate(config, inputs, output, release_ray=ray.shutdown if started_ray else None)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from schemas.funnel import read_accounting

        stages, _ = read_accounting(summary["output"])
        print(format_funnel(stages))
        print(f"\nkept {summary['kept']} of {summary['rows_in']} rows in {summary['wall_seconds']:.1f} s -> "
              f"{summary['output']}  (Ray logs: {logs}; -v shows them)")
    return summary


def leave() -> None:
    """End the process without the interpreter's teardown (~0.5 s of freeing the modules of
    Ray and pyarrow on one core) when the job's own Ray is already stopped: everything is
    written, so only Python's buffers and the log files are left to flush. Still connected
    to a cluster (`ray job submit`), the normal exit disconnects cleanly."""
    import logging
    import sys

    import ray

    if ray.is_initialized():
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    run_main(main)
    leave()
