"""The curate job's stage clock: seconds per stage, when the first batch started, model builds.

Every pipeline process (actor or task) appends what it measured to its own JSON-lines file in
a directory of the job's staging area; the driver sums the files once the outputs are written.
The staging area is where the workers write the Parquet outputs, so every worker can reach it.
A Ray actor did this before: one more Python process to start beside the pipeline's (~1 s of
CPU on a one-core job, issue 18), and one more thing pinned to the driver's node.

One file per process, however many copies of the clock it deserializes (Ray Data ships a
task's callable with every task: a long run would otherwise leave a file per block). Lines are
flushed as they are written: a process that Ray ends without running its destructors (an
actor pool's workers at the end of the run) has left them all on disk.
"""
from __future__ import annotations

import json
import os
import socket
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

# This process's open file in each clock directory (shared by every copy of the clock here).
_FILES: dict[str, TextIO] = {}


@dataclass
class ClockReading:
    seconds: dict[str, float] = field(default_factory=dict)   # stage -> seconds, summed over batches
    first_batch: float | None = None                          # wall clock of the earliest batch's start
    builds: list[tuple[float, float]] = field(default_factory=list)  # (started, finished) per stage build


class StageClock:
    """Picklable (a directory name): every process that holds a copy writes its own file there."""

    def __init__(self, directory: str | Path):
        self.directory = str(directory)

    def _write(self, record: dict) -> None:
        handle = _FILES.get(self.directory)
        if handle is None:
            os.makedirs(self.directory, exist_ok=True)
            name = f"{socket.gethostname()}-{os.getpid()}.jsonl"
            handle = _FILES[self.directory] = open(os.path.join(self.directory, name), "a",  # noqa: SIM115
                                                   encoding="utf-8")  # kept open for the process's life
        handle.write(json.dumps(record) + "\n")
        handle.flush()

    def add(self, seconds: dict[str, float], started: float | None = None) -> None:
        """One batch: seconds per stage, and the wall-clock time the batch started."""
        self._write({"seconds": seconds, "started": started})

    def built(self, started: float, finished: float) -> None:
        """A pipeline actor built its stages (loaded its models) from `started` to `finished`."""
        self._write({"built": [started, finished]})

    def read(self) -> ClockReading:
        """Everything every process wrote (the driver's call, after the run)."""
        seconds: dict[str, float] = defaultdict(float)
        reading = ClockReading()
        for path in sorted(Path(self.directory).glob("*.jsonl")) if os.path.isdir(self.directory) else []:
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a process that died mid-write
                    continue
                for name, value in (record.get("seconds") or {}).items():
                    seconds[name] += value
                started = record.get("started")
                if started is not None and (reading.first_batch is None or started < reading.first_batch):
                    reading.first_batch = started
                if record.get("built"):
                    reading.builds.append(tuple(record["built"]))
        reading.seconds = dict(seconds)
        return reading
