"""Re-render a dataset card from card.arrow, or compare two cards.

    python jobs/card.py DIR                      # DIR/card/card.md, card.html and PNGs from DIR/card/card.arrow
    python jobs/card.py DIR --compare OTHER_DIR  # DIR/card/compare-<OTHER>.html and .md
    python jobs/card.py DIR --recompute --kind document   # recompute the card from DIR's Parquet files
    python jobs/card.py DIR --trace DOC_ID       # one curated document's path: input, labels, drop or cluster
    python jobs/card.py RUN --trace DOC_ID       # a training run: the packed sequences (and token spans) the
                                                 # document went into, then its curate trace when the run
                                                 # trained on a curated dataset (or one given with --curated)
"""
from __future__ import annotations

import argparse

if not __package__:  # run as `python jobs/X.py`: see jobs/_bootstrap.py
    import _bootstrap  # noqa: F401

from jobs.common import run_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset_dir", help="dataset directory holding card/card.arrow")
    parser.add_argument("--compare", metavar="OTHER_DIR", help="write a side-by-side comparison with this dataset's card")
    parser.add_argument("--output", help="comparison output path (default DIR/card/compare-<OTHER>.html and .md)")
    parser.add_argument("--recompute", action="store_true", help="recompute card.arrow from the dataset files first")
    parser.add_argument("--kind", help="record kind, needed with --recompute (document, sft, preference, ...)")
    parser.add_argument("--text-column", help="text column to measure, with --recompute")
    parser.add_argument("--trace", metavar="DOC_ID", help="print a document's lineage: in a curate dataset (id of a "
                        "kept or dropped row) or a training run directory (the packed sequences it went into)")
    parser.add_argument("--curated", metavar="CURATED_DIR", help="with --trace on a training run: the curated dataset "
                        "to trace the document in too (default: the run's own dataset, when it is a curate output)")
    args = parser.parse_args(argv)

    if args.trace:
        try:
            print(trace_text(args.dataset_dir, args.trace, args.curated))
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        return

    if args.recompute:
        from schemas.card import write_card

        if not args.kind:
            parser.error("--recompute needs --kind")
        print(write_card(args.dataset_dir, args.kind, text_column=args.text_column))
    if args.compare:
        from schemas.card_compare import compare_cards

        for path in compare_cards(args.dataset_dir, args.compare, args.output):
            print(path)
    elif not args.recompute:
        from schemas.card import rerender

        print(rerender(args.dataset_dir))


def trace_text(directory: str, doc_id: str, curated: str | None = None) -> str:
    """A curate dataset's trace, or a training run's followed by the curate trace of the
    dataset it trained the document from."""
    from curate.lineage import curated_root, format_trace, trace
    from train.lineage import format_training_trace, is_training_run, trace_training

    if not is_training_run(directory):
        return format_trace(trace(directory, doc_id))
    trained = trace_training(directory, doc_id)
    text = format_training_trace(trained)
    dataset = curated_root(curated or trained["source_path"])
    if dataset is None:
        if curated:
            raise ValueError(f"--curated {curated}: not a curate dataset directory (no accounting.json and data/)")
        return text
    try:
        return f"{text}\n\ncurated in {dataset}\n{format_trace(trace(dataset, doc_id))}"
    except KeyError:
        return f"{text}\n\ncurated in {dataset}: no row with id {doc_id!r}"


if __name__ == "__main__":
    run_main(main)
