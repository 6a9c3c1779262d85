"""`raymill JOB ARGS...`: the installed command, running the same code as `python jobs/JOB.py ARGS...`.

Installed commands start with the venv's bin/ on sys.path, not the current directory, so a
user's own train.py or schemas/ beside them cannot shadow raymill's packages.
"""
from __future__ import annotations

import importlib
import sys

JOBS = ("curate", "dedup", "synth", "train", "card", "eval", "chat", "export")


def run(job: str, argv: list[str] | None = None) -> None:
    from jobs.common import run_main

    module = importlib.import_module(f"jobs.{job}")
    run_main(lambda: module.main(argv))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in JOBS:
        print(f"usage: raymill {{{','.join(JOBS)}}} [ARGS...]   (raymill JOB --help for a job's options)",
              file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    run(argv[0], argv[1:])


def _entry(job: str):
    def entry() -> None:
        run(job)
    entry.__name__ = f"raymill_{job}"
    return entry


curate, dedup, synth, train, card, evaluate, chat, export = (_entry(j) for j in JOBS)
