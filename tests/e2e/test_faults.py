"""Faults on a real two-node cluster: processes killed with SIGKILL by pid while a job runs.

Each disturbed curate run is compared row by row (id -> drop stage and reason) with the
undisturbed run of the same input (`curate_reference`)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from schemas.dataset_io import is_complete
from schemas.funnel import read_accounting
from tests.e2e.conftest import RayCluster, dataset_rows, job_output, list_state, python, start_job, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A Ray actor's process title gains ".submit" while it runs a batch (`ray::MapWorker(MapBatches(
# ChainActor)).submit`): killing it then lands mid-run, in the middle of a batch, not at start-up.
# (The embedded sample crawl gives the actors only a few seconds of work, so poll often.)
IN_BATCH = "ChainActor)).submit"


def _in_batch(cluster: RayCluster, nodes=None) -> psutil.Process | None:
    """A curate pipeline actor that is processing a batch right now."""
    for proc in cluster.processes_named(IN_BATCH) if nodes is None else _named_on(nodes, IN_BATCH):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                return proc
        except psutil.Error:
            continue
    return None


def _named_on(nodes, fragment: str) -> list[psutil.Process]:
    out = []
    for node in nodes:
        for proc in node.processes():
            try:
                if fragment in " ".join(proc.cmdline()):
                    out.append(proc)
            except psutil.Error:
                continue
    return out


def _while_running(job: subprocess.Popen, log: Path, predicate, timeout: float, what: str):
    """Wait for `predicate` while the job runs; a job that ends first fails the test with its log."""
    def check():
        if job.poll() is not None:
            pytest.fail(f"the job ended (exit {job.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        return predicate()
    return wait_until(check, timeout, what, every=0.1)


def _sigkill(proc: psutil.Process) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    psutil.wait_procs([proc], timeout=10)


def _curate(cluster: RayCluster, out: Path, cache: Path, log: Path) -> subprocess.Popen:
    return start_job(cluster, [python(), "jobs/curate.py", "--output", str(out)], {"RAYMILL_CACHE": str(cache)}, log)


def _same_rows_as(out: Path, reference: Path) -> None:
    assert is_complete(out)
    got, want = dataset_rows(out), dataset_rows(reference)
    assert got.keys() == want.keys()
    differing = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not differing, f"{len(differing)} rows differ, e.g. {list(differing.items())[:3]}"
    (stages, _), (ref_stages, _) = read_accounting(out), read_accounting(reference)
    assert [(s.stage, s.rows_in, s.kept, s.dropped) for s in stages] == \
        [(s.stage, s.rows_in, s.kept, s.dropped) for s in ref_stages]


def test_curate_actor_killed_mid_run_is_restarted_and_the_output_equals_an_undisturbed_run(
        ray_two_nodes, curate_reference, e2e_cache, tmp_path):
    out, log = tmp_path / "curated", tmp_path / "job.log"
    job = _curate(ray_two_nodes, out, e2e_cache, log)
    victim = _while_running(job, log, lambda: _in_batch(ray_two_nodes), 240, "a curate actor in a batch")
    _sigkill(victim)
    assert job.poll() is None, "the job had already finished: the kill did not land mid-run"
    code, text = job_output(job, log)
    assert code == 0, text[-4000:]
    _same_rows_as(out, curate_reference)
    # Ray Data created the pool's actors with max_restarts=-1: the killed one came back.
    restarted = [a for a in list_state(ray_two_nodes, "actors") if "ChainActor" in (a.get("class_name") or "")
                 and (a.get("num_restarts") or 0) >= 1]
    assert restarted, "no curate actor shows a restart"


def test_curate_interrupted_outright_leaves_no_complete_dataset_and_a_rerun_equals_an_undisturbed_run(
        ray_two_nodes, curate_reference, e2e_cache, tmp_path):
    out, log = tmp_path / "curated", tmp_path / "job.log"
    job = _curate(ray_two_nodes, out, e2e_cache, log)

    def driver_mid_run() -> psutil.Process | None:
        assert not is_complete(out), "the output looked complete while the job was still running"
        drivers = [p for p in ray_two_nodes.processes_named("jobs/curate.py") if str(out) in " ".join(p.cmdline())]
        staging = list(out.parent.glob(f".{out.name}.tmp-*"))
        return drivers[0] if drivers and staging and _in_batch(ray_two_nodes) else None

    driver = _while_running(job, log, driver_mid_run, 240, "the curate driver mid-run")
    _sigkill(driver)  # as a crash or an OOM kill would stop it: no cleanup code runs
    code, text = job_output(job, log)
    assert code != 0, "the job succeeded although its driver was killed"
    assert not is_complete(out)
    leftovers = list(out.parent.glob(f".{out.name}.tmp-*"))
    assert all(not is_complete(d) for d in leftovers)  # the half-written temporary dir is hidden and unmarked

    rerun_log = tmp_path / "rerun.log"
    code, text = job_output(_curate(ray_two_nodes, out, e2e_cache, rerun_log), rerun_log, timeout=240)
    assert code == 0, text[-4000:]
    _same_rows_as(out, curate_reference)


def test_node_leaving_mid_curate_the_job_finishes_on_the_remaining_nodes(
        ray_two_nodes, curate_reference, e2e_cache, tmp_path):
    """A third 1-CPU node joins, the pipeline spreads over all three, then that node dies
    (SIGKILL of its raylet and every process under it). Ray Data retries the lost tasks, restarts
    the lost actor on a surviving node and rebuilds lost blocks from lineage: the job finishes
    with the same rows as an undisturbed run."""
    leaving = ray_two_nodes.add_node(1)
    try:
        out, log = tmp_path / "curated", tmp_path / "job.log"
        job = _curate(ray_two_nodes, out, e2e_cache, log)
        _while_running(job, log, lambda: _in_batch(ray_two_nodes, nodes=[leaving]), 240,
                       "a curate actor in a batch on the third node")
        ray_two_nodes.kill_node(leaving)
        assert job.poll() is None, "the job had already finished: the node left after the run"
        ray_two_nodes.wait_for_alive(2)
        code, text = job_output(job, log)
        assert code == 0, text[-4000:]
        _same_rows_as(out, curate_reference)
    finally:
        if leaving in ray_two_nodes.nodes:
            ray_two_nodes.kill_node(leaving)


def test_training_worker_killed_mid_run_restarts_from_the_last_checkpoint(ray_two_nodes, e2e_cache, tmp_path):
    run, log = tmp_path / "sft", tmp_path / "job.log"
    max_steps, save_steps = 48, 4
    job = start_job(ray_two_nodes, [python(), "jobs/train.py", "--stage", "sft", "--output", str(run),
                                    "--num-workers", "1", "--max-steps", str(max_steps), f"save_steps={save_steps}",
                                    "max_failures=1"], {"RAYMILL_CACHE": str(e2e_cache)}, log)

    def checkpointed_worker() -> psutil.Process | None:
        # Not the checkpoint directory: it appears while the worker still copies it, before Ray
        # Train's controller has registered it (a kill then restarts from nothing). The controller
        # writes its snapshot once it has: from then on a restart must resume from that checkpoint.
        snapshot = run / "ray" / "checkpoint_manager_snapshot.json"
        workers = ray_two_nodes.processes_named("RayTrainWorker")
        registered = snapshot.exists() and "checkpoint_" in snapshot.read_text(errors="replace")
        metrics = run / "metrics.jsonl"
        # Kill mid-training, not after the last step (a fast run reaches its end quickly).
        early = metrics.exists() and sum(1 for line in metrics.read_text().splitlines() if '"loss"' in line) < 24
        return workers[0] if registered and early and workers else None

    worker = _while_running(job, log, checkpointed_worker, 300, "a first checkpoint")
    killed_at = time.time()
    _sigkill(worker)
    assert job.poll() is None, "the job had already finished: the kill did not land mid-run"
    code, text = job_output(job, log)
    assert code == 0, text[-4000:]

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r for r in records if "loss" in r]
    # Each step once, in order, up to max_steps: a restart from scratch would have logged steps
    # 1.. again; a resume from the checkpoint at step s drops the records after s and goes on.
    assert [r["step"] for r in losses] == list(range(1, max_steps + 1))
    # The worker that finished loaded its model after the kill (its phase file says when): a new worker.
    phases = json.loads((run / "logs" / "worker_phases.json").read_text())
    assert phases["model_loaded"] > killed_at, (phases, killed_at)
    # The restarted worker's clock starts at 0, so time_s drops right after the checkpoint step it
    # resumed from. A fast tiny run can be killed so early that its clock had not passed the new
    # worker's start-up: then there is no drop to see, and the checks above carry the test.
    restarts = [b["step"] for a, b in zip(losses, losses[1:]) if b["time_s"] < a["time_s"]]
    assert len(restarts) <= 1 and all((step - 1) % save_steps == 0 for step in restarts), restarts
    assert all(isinstance(r["loss"], float) and r["loss"] == r["loss"] for r in losses)  # finite, no NaN
    summary = json.loads((run / "run_summary.json").read_text())
    assert not summary.get("error") and summary.get("global_step", max_steps) == max_steps
