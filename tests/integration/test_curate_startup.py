"""Embedded Ray start-up of the jobs (jobs.common.init_ray): no dashboard unless asked, Ray's
log lines in the run's log file, the session's logs linked beside it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys, time
from jobs.common import init_ray
start = time.perf_counter()
init_ray(1, log_dir=sys.argv[1])
import ray
seconds = time.perf_counter() - start
node = ray._private.worker._global_node
print(json.dumps({"webui_url": node.webui_url, "processes": sorted(node.all_processes), "seconds": seconds}))
"""


def start(tmp_path: Path, **env: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "logs")], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(REPO), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


def test_embedded_ray_starts_without_the_dashboard_and_logs_to_the_run_directory(tmp_path):
    got = start(tmp_path)
    assert not got["webui_url"], got  # no dashboard web server
    assert "Started a local Ray instance" not in got["stderr"]
    log = (tmp_path / "logs" / "ray.log").read_text(encoding="utf-8")
    # Ray's own start-up line lands in the file instead of the console (the rest varies by run).
    assert "started a local ray instance" in log.lower()
    assert (tmp_path / "logs" / "ray-session").resolve().is_dir()


def test_the_dashboard_comes_back_when_asked(tmp_path):
    got = start(tmp_path, RAYMILL_DASHBOARD="1")
    assert got["webui_url"], got
