"""`jobs/synth.py` on bad input: clear errors before Ray starts and before anything is written."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from synth.backends import BackendUnavailable
from synth.seeds import SeedError

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.fixture
def job(monkeypatch):
    """jobs.synth with Ray start-up replaced by a tripwire: these errors must come before it."""
    import jobs.synth as job

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the input was checked")

    monkeypatch.setattr(job, "init_ray", no_ray)
    return job


@pytest.fixture
def seeds_file(tmp_path):
    path = tmp_path / "seeds.jsonl"
    rows = [{"id": f"s{i}", "instruction": f"Say hello number {i}.", "instances": [{"input": "", "output": "hi"}],
             "is_classification": i == 0} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_unreachable_generator_fails_before_any_work(job, seeds_file, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(BackendUnavailable, match=f"cannot reach the OpenAI-compatible server at {url}"):
        job.main(["instructions", "--seeds", str(seeds_file), "--backend", f"http:m@{url}",
                  "--output", str(tmp_path / "out"), "backend.ready_timeout_s=2"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seeds.jsonl"]  # no output, no checkpoint


def test_unreachable_policy_or_judge_fails_before_any_work(job, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Name a colour."}) + "\n", encoding="utf-8")
    dead = f"http:m@http://127.0.0.1:{_closed_port()}/v1"
    for extra in (["--policy", dead, "--reward-model", str(tmp_path)], ["--policy", dead, "--judge", dead]):
        with pytest.raises(BackendUnavailable, match="cannot reach"):
            job.main(["preferences", "--prompts", str(prompts), *extra, "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_unreachable_judge_after_a_ready_policy(job, tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Name a colour."}) + "\n", encoding="utf-8")
    dead = f"http:judge@http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        job.main(["best-of-n", "--prompts", str(prompts), "--policy", f"local:{tiny_model_dir}", "--judge", dead,
                  "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_malformed_seed_line_is_named_before_ray_starts(job, seeds_file, tmp_path):
    with seeds_file.open("a", encoding="utf-8") as f:
        f.write('{"id": "bad", "instruction": "Do it.", "instances": [{"input": ""}]}\n')
    with pytest.raises(SeedError, match=r"seeds.jsonl:4: instances\[0\]: missing field 'output'"):
        job.main(["instructions", "--seeds", str(seeds_file), "--backend", f"local:{tmp_path}",
                  "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_missing_local_model_is_a_clear_error(job, seeds_file, tmp_path):
    with pytest.raises(BackendUnavailable, match="not a model directory"):
        job.main(["instructions", "--seeds", str(seeds_file), "--backend", f"local:{tmp_path / 'nope'}",
                  "--output", str(tmp_path / "out")])


def test_command_line_prints_one_error_line_and_exits_2(tmp_path, seeds_file):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "synth.py"), "instructions", "--seeds", str(seeds_file),
                           "--backend", f"http:m@{url}", "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: cannot reach the OpenAI-compatible server at {url}")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
