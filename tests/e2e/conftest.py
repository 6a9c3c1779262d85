"""A real Ray cluster for end-to-end tests: `ray start --head` with token auth, on loopback."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head():
    """Start a head node with token auth; yield (dashboard address, env for the `ray` CLI)."""
    if not Path(RAY).exists():
        pytest.skip("the `ray` CLI is not installed beside this Python")
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    # One static token shared by the head node, the job driver and the CLI (highest-precedence source).
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    gcs_port, dash_port, agent_port = free_port(), free_port(), free_port()
    # The job agent's HTTP port defaults to a fixed 52365: another Ray on the machine would hold it
    # and `ray job submit` would then time out waiting for an agent.
    start = subprocess.run(
        [RAY, "start", "--head", "--num-cpus=2", f"--port={gcs_port}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash_port}", f"--dashboard-agent-listen-port={agent_port}",
         "--include-dashboard=true", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    if start.returncode != 0:
        pytest.fail(f"ray start failed:\n{start.stdout}\n{start.stderr}")
    address = f"http://127.0.0.1:{dash_port}"
    try:
        _wait_for_dashboard(address, env)
        yield address, env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _wait_for_dashboard(address: str, env: dict, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        probe = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True, text=True)
        if probe.returncode == 0:
            return
        last = probe.stderr[-500:]
        time.sleep(2)
    pytest.fail(f"Ray dashboard at {address} did not come up: {last}")


def submit(address: str, env: dict, entrypoint: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """`ray job submit` and wait; returns the CLI's completed process (its output has the job's logs)."""
    cmd = [RAY, "job", "submit", "--address", address, "--", *entrypoint]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session")
def job_submit():
    return submit


def python() -> str:
    return sys.executable


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
