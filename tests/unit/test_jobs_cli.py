"""The job entry points: `python jobs/X.py`, the installed `raymill JOB` command, and the
one-line error when the interpreter lacks raymill's dependencies."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_script_and_installed_command_run_the_same_job(tmp_path):
    # A user's own train.py in the working directory must not shadow the train package.
    (tmp_path / "train.py").write_text("raise SystemExit('the user file was imported')\n")
    script = _run([sys.executable, str(REPO / "jobs" / "train.py"), "--stage", "nope"], tmp_path)
    assert script.returncode == 2 and script.stderr.strip().splitlines()[-1].startswith("error: unknown stage 'nope'")
    command = shutil.which("raymill", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("the raymill command is not installed in this environment (pip install -e .)")
    installed = _run([command, "train", "--stage", "nope"], tmp_path)
    assert installed.returncode == 2 and installed.stderr.strip().splitlines()[-1] == script.stderr.strip().splitlines()[-1]
    usage = _run([command], tmp_path)
    assert usage.returncode == 2 and "usage: raymill {curate," in usage.stderr


def test_interpreter_without_dependencies_gets_one_line(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    result = _run([str(bare / "bin" / "python"), str(REPO / "jobs" / "curate.py")], tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    assert "lacks raymill's dependencies" in lines[0] and str(bare / "bin" / "python") in lines[0]
