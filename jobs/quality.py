"""Train the fastText classifiers behind the curate `quality` and `topic` labels.

    python jobs/quality.py train --positive DATA [DATA ...] --negative DATA [DATA ...] --output MODEL.bin
    python jobs/quality.py train --label sport=DATA --label science=DATA ... --output TOPIC.bin

DATA is a JSONL file (a `text` field per line), a TXT file (one text per line), a Parquet
file (a `text` column) or a dataset directory (e.g. a curate output). The held-out split
(`--test-fraction` of each label) gives per-label precision, recall and F1; they are
printed and written with the model's card (MODEL.bin.card.json / .card.md). Use the
model in curate with `quality.model_path=MODEL.bin` (labels `hq` / `lq` from --positive /
--negative) or `topic.enabled=true topic.model_path=TOPIC.bin`.
"""
from __future__ import annotations

import argparse
import json

if not __package__:  # run as `python jobs/X.py`: see jobs/_bootstrap.py
    import _bootstrap  # noqa: F401

from jobs.common import run_main  # noqa: E402


def _label_sources(args) -> dict[str, list[str]]:
    from curate.quality import POSITIVE_LABEL
    from curate.quality_default import NEGATIVE_LABEL

    sources: dict[str, list[str]] = {}
    if args.positive or args.negative:
        if not (args.positive and args.negative):
            raise ValueError("--positive and --negative go together")
        sources[POSITIVE_LABEL], sources[NEGATIVE_LABEL] = list(args.positive), list(args.negative)
    for item in args.label or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--label {item!r}: expected NAME=DATA")
        sources.setdefault(name, []).append(path)
    if len(sources) < 2:
        raise ValueError("give --positive and --negative, or --label NAME=DATA for at least two labels")
    return sources


def main(argv: list[str] | None = None) -> dict:
    from curate.classifier import TrainOptions, read_texts, train_classifier

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a classifier and write its card")
    train.add_argument("--positive", nargs="+", help="high-quality examples (label hq)")
    train.add_argument("--negative", nargs="+", help="low-quality examples (label lq)")
    train.add_argument("--label", action="append", metavar="NAME=DATA", help="examples of one label (repeatable)")
    train.add_argument("--output", required=True, help="model file to write (.bin)")
    train.add_argument("--text-column", default="text")
    train.add_argument("--max-per-label", type=int, help="use at most this many texts per label")
    defaults = TrainOptions()
    for name in ("epochs", "lr", "word_ngrams", "dim", "bucket", "test_fraction", "max_chars", "seed"):
        value = getattr(defaults, name)
        train.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)

    sources = _label_sources(args)
    examples = []
    for label, paths in sources.items():
        texts = [t for path in paths for t in read_texts(path, args.text_column)]
        if not texts:
            raise ValueError(f"label {label!r}: no texts in {', '.join(paths)}")
        examples += [(t, label) for t in texts[:args.max_per_label or None]]
    options = TrainOptions(**{name: getattr(args, name) for name in TrainOptions.__dataclass_fields__
                              if name != "min_count"})
    report = train_classifier(examples, args.output, options, sources=sources)
    summary = {"model": report.model, "sha256": report.sha256, "train": report.labels, "held_out": report.held_out,
               "accuracy": report.accuracy, "metrics": report.metrics}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    run_main(main)
