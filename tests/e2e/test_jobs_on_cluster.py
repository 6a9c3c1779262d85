"""The product's jobs submitted with `ray job submit` to a real token-auth cluster, as users run them."""
from __future__ import annotations

import json

import pytest

from schemas.dataset_io import is_complete
from schemas.funnel import read_accounting
from tests.e2e.conftest import REPO, python

pytestmark = pytest.mark.e2e


def test_curate_job_on_the_cluster_writes_a_complete_accounted_dataset(ray_head, job_submit, tmp_path):
    address, env = ray_head
    out = tmp_path / "curated"
    env = {**env, "RAYMILL_CACHE": str(tmp_path / "cache")}
    done = job_submit(address, env, [python(), str(REPO / "jobs" / "curate.py"), "--output", str(out),
                                     "dedup.enabled=true"])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert is_complete(out)
    stages, _ = read_accounting(out)
    assert stages[0].rows_in > 100  # the embedded sample crawl
    assert stages[0].rows_in == stages[-1].kept + sum(sum(s.dropped.values()) for s in stages)
    assert "dedup" in [s.stage for s in stages]
    assert (out / "card" / "card.md").exists() and (out / "card" / "card.html").exists()


def test_train_job_on_the_cluster_trains_and_writes_run_outputs(ray_head, job_submit, tmp_path):
    address, env = ray_head
    run = tmp_path / "run"
    env = {**env, "RAYMILL_CACHE": str(tmp_path / "cache")}
    done = job_submit(address, env, [python(), str(REPO / "jobs" / "train.py"), "--stage", "sft", "--output",
                                     str(run), "--max-steps", "4", "--num-workers", "1"])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert any("loss" in m for m in metrics)
    assert (run / "loss.png").exists()
