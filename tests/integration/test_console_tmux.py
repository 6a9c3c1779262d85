"""jobs/curate.py in a real terminal (tmux): the console shows progress and the closing
funnel table, not Ray's log lines; those land in OUTPUT.logs/ray.log."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def run_in_tmux(command: str, timeout: float = 240) -> str:
    """Run `command` in a fresh 200x50 tmux window; return the screen and scrollback once it exits."""
    session = f"raymill-console-{uuid.uuid4().hex[:8]}"
    done = f"__done_{uuid.uuid4().hex[:6]}__"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50"], check=True)
    try:
        subprocess.run(["tmux", "send-keys", "-t", session, f"{command}; echo {done}", "Enter"], check=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-2000", "-t", session],
                                    capture_output=True, text=True, check=True).stdout
            if f"\n{done}" in screen:
                return screen
            time.sleep(1)
        raise AssertionError(f"command did not finish in {timeout} s; screen:\n{screen}")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_curate_console_is_quiet_and_ends_with_the_funnel_table(tmp_path):
    out = tmp_path / "curated"
    env = f"RAYMILL_CACHE={tmp_path / 'cache'} RAY_ADDRESS="
    command = (f"cd {REPO} && {env} {sys.executable} jobs/curate.py --output {out} dedup.enabled=false "
               "perplexity.enabled=false quality.enabled=false runtime.num_cpus=2")
    screen = run_in_tmux(command)
    print(screen)  # kept in the test log: what a person saw
    job_lines = screen.split(command, 1)[-1].splitlines()
    text = "\n".join(job_lines)
    # The closing table: one row per stage, with the read stage's counted skips.
    header = next(line for line in job_lines if line.startswith("stage ") and "dropped by reason" in line)
    assert header.split()[:5] == ["stage", "in", "kept", "dropped", "seconds"]
    for stage in ("read", "url_filter", "extract", "langid", "heuristics", "filter"):
        assert any(line.split()[:1] == [stage] for line in job_lines), stage
    assert "warc_request" in text and "kept " in text and str(out.with_name("curated.logs")) in text
    # None of Ray's own lines: start-up notices, plans, INFO records, the C++ actor notice.
    for noise in ("INFO", "Starting execution", "Execution plan", "core_worker.cc", "Token authentication",
                  "dashboard at", "Traceback"):
        assert noise not in text, noise
    # They went to the run's log file instead, and Ray's session logs are linked beside it.
    log = (out.with_name("curated.logs") / "ray.log").read_text(encoding="utf-8")
    assert "Token authentication" in log or "ray.data" in log
    assert (out.with_name("curated.logs") / "ray-session").is_symlink()
    assert (out / "_SUCCESS").exists()
