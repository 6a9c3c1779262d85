"""The curate stage clock: every process's copy writes its own file; the driver sums them all."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

from curate.stage_clock import StageClock

REPO = Path(__file__).resolve().parents[2]


def test_each_process_writes_one_file_and_the_reading_sums_them(tmp_path):
    clock = StageClock(tmp_path / "clock")
    assert clock.read().seconds == {} and clock.read().first_batch is None  # nothing written yet
    a, b = pickle.loads(pickle.dumps(clock)), pickle.loads(pickle.dumps(clock))  # as Ray ships it, per task
    a.built(100.0, 102.5)
    a.add({"extract": 1.5, "langid": 0.25}, started=105.0)
    b.add({"extract": 2.0}, started=103.0)
    a.add({"extract": 0.5, "langid": 0.25}, started=110.0)
    assert len(list((tmp_path / "clock").glob("*.jsonl"))) == 1  # two copies, one process
    # Another process (a Ray worker) writes its own file beside it.
    code = ("import pickle, sys; clock = pickle.loads(sys.stdin.buffer.read()); "
            "clock.add({'extract': 4.0, 'pii': 1.0}, started=101.0)")
    subprocess.run([sys.executable, "-c", code], input=pickle.dumps(clock), check=True, cwd=REPO)
    assert len(list((tmp_path / "clock").glob("*.jsonl"))) == 2
    reading = clock.read()
    assert reading.seconds == {"extract": 8.0, "langid": 0.5, "pii": 1.0}
    assert reading.first_batch == 101.0 and reading.builds == [(100.0, 102.5)]


def test_a_line_cut_short_is_skipped(tmp_path):
    clock = StageClock(tmp_path / "clock")
    clock.add({"extract": 1.0}, started=1.0)
    with open(next((tmp_path / "clock").glob("*.jsonl")), "a", encoding="utf-8") as fh:
        fh.write('{"seconds": {"extract": 9')  # a process ended mid-write
    assert clock.read().seconds == {"extract": 1.0}
