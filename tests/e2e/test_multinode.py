"""The jobs on a real two-node cluster (head + a second raylet, 1 CPU each, token auth), sent
the way a user sends them: `ray job submit --working-dir . -- python jobs/X.py ...`."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from schemas.dataset_io import is_complete
from schemas.funnel import read_accounting
from tests.e2e.conftest import RayCluster, dataset_rows, list_state, python, submit_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _funnel_balances(directory: Path) -> None:
    """Rows in = rows kept + rows dropped, and every stage's rows in = the previous stage's kept."""
    stages, _ = read_accounting(directory)
    assert stages[0].rows_in == stages[-1].kept + sum(sum(s.dropped.values()) for s in stages)
    for before, after in zip(stages, stages[1:]):
        assert after.rows_in == before.kept


def _card_written(directory: Path) -> None:
    for name in ("card.arrow", "card.md", "card.html"):
        assert (directory / "card" / name).stat().st_size > 0, name


def _actor_nodes(cluster: RayCluster, class_fragment: str) -> set[str]:
    """Node ids of the actors whose class name contains `class_fragment` (dead ones included)."""
    return {a["node_id"] for a in list_state(cluster, "actors") if class_fragment in (a.get("class_name") or "")}


def test_cluster_has_two_alive_nodes_with_one_cpu_each(ray_two_nodes):
    alive = ray_two_nodes.wait_for_alive(2)
    assert sorted(n["resources_total"]["CPU"] for n in alive) == [1.0, 1.0]
    assert {n["node_id"] for n in alive} == {node.node_id() for node in ray_two_nodes.nodes}


def test_curate_runs_across_both_nodes_and_accounts_for_every_row(ray_two_nodes, curate_reference):
    out = curate_reference
    assert is_complete(out)
    _funnel_balances(out)
    _card_written(out)
    rows = dataset_rows(out)
    kept = [r for r, (stage, _) in rows.items() if stage is None]
    assert len(rows) > 100 and 0 < len(kept) < len(rows)  # the sample crawl keeps some pages, drops others
    assert all(reason for stage, reason in rows.values() if stage is not None)
    # One pipeline actor per cluster CPU, 0.5 CPU each: Ray fills the head to half and then
    # places the second actor on the other node, so the extraction really ran on two nodes.
    # (The state API also lists the actors of earlier tests' runs, some on a node a fault test
    # added and removed: both of the fixture's nodes must be among the actors' nodes.)
    assert {n.node_id() for n in ray_two_nodes.nodes} <= _actor_nodes(ray_two_nodes, "ChainActor")


def test_dedup_job_on_two_nodes_writes_a_complete_dataset(ray_two_nodes, curate_reference, e2e_cache, tmp_path):
    out = tmp_path / "dedup"
    done = submit_job(ray_two_nodes, [python(), "jobs/dedup.py", "--input", str(curate_reference),
                                      "--output", str(out), "threshold=0.8"], {"RAYMILL_CACHE": str(e2e_cache)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert is_complete(out)
    _funnel_balances(out)
    _card_written(out)
    kept_in = {r for r, (stage, _) in dataset_rows(curate_reference).items() if stage is None}
    rows = dataset_rows(out)
    assert set(rows) == kept_in  # dedup reads the kept documents and accounts for each of them
    survivors = pq.read_table(sorted((out / "data").glob("*.parquet")), columns=["dup_cluster_size"])
    assert survivors.num_rows > 0 and min(survivors.column("dup_cluster_size").to_pylist()) >= 1


def _actor_ids(cluster: RayCluster, class_fragment: str) -> set[str]:
    return {a["actor_id"] for a in list_state(cluster, "actors") if class_fragment in (a.get("class_name") or "")}


def _new_actor_nodes(cluster: RayCluster, class_fragment: str, before: set[str]) -> list[str]:
    """Node id of each actor of that class created since `before` was listed (one per training worker)."""
    return [a["node_id"] for a in list_state(cluster, "actors")
            if class_fragment in (a.get("class_name") or "") and a["actor_id"] not in before]


def _train_sft(cluster: RayCluster, cache: Path, run: Path, *extra: str) -> list[str]:
    """Run a 2-worker SFT job; return the node id of each training worker."""
    before = _actor_ids(cluster, "RayTrainWorker")
    done = submit_job(cluster, [python(), "jobs/train.py", "--stage", "sft", "--output", str(run),
                                "--num-workers", "2", "--max-steps", "3", *extra], {"RAYMILL_CACHE": str(cache)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return _new_actor_nodes(cluster, "RayTrainWorker", before)


def test_sft_with_two_workers_trains_on_the_two_node_cluster(ray_two_nodes, e2e_cache, tmp_path):
    run = tmp_path / "sft"
    worker_nodes = _train_sft(ray_two_nodes, e2e_cache, run)
    assert len(worker_nodes) == 2  # a world of two Ray Train workers
    print(f"training workers on {len(set(worker_nodes))} node(s)")  # for the record: PACK placement today
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [m["step"] for m in metrics if "loss" in m][-1] == 3
    summary = json.loads((run / "run_summary.json").read_text())
    assert not summary.get("error")
    assert (run / "model" / "model.safetensors").exists() and (run / "loss.png").exists()
    assert (run / "train_data" / "card" / "card.md").exists()


def test_sft_workers_spread_one_per_node(ray_two_nodes, e2e_cache, tmp_path):
    worker_nodes = _train_sft(ray_two_nodes, e2e_cache, tmp_path / "sft-spread", "placement_strategy=SPREAD")
    assert sorted(worker_nodes) == sorted(n.node_id() for n in ray_two_nodes.nodes)


def test_synth_instructions_on_two_nodes_writes_an_sft_set(ray_two_nodes, e2e_cache, tmp_path):
    out = tmp_path / "self_instruct"
    done = submit_job(ray_two_nodes, [python(), "jobs/synth.py", "instructions", "--num", "2", "--output", str(out),
                                      "self_instruct.max_rounds=1"],  # one round: the check is the job, not the yield
                      {"RAYMILL_CACHE": str(e2e_cache)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert is_complete(out)
    _card_written(out)
    kept = pq.read_table(sorted((out / "data").glob("*.parquet")))
    dropped = sorted((out / "dropped").glob("*.parquet"))
    assert kept.num_rows + sum(pq.read_metadata(f).num_rows for f in dropped) > 0
    assert "messages" in kept.column_names


def test_job_under_an_interpreter_without_raymill_dependencies_fails_with_one_clear_line(ray_two_nodes, tmp_path):
    """The new user's pitfall: `python` in the entrypoint is whatever `ray start` found on its PATH.
    Here it is the system Python, which has no pyarrow."""
    bare = "/usr/bin/python3"
    probe = subprocess.run([bare, "-c", "import pyarrow"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{bare} has pyarrow: it cannot stand in for an interpreter without raymill's dependencies")
    done = submit_job(ray_two_nodes, [bare, "jobs/curate.py", "--output", str(tmp_path / "never")])
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert "Traceback" not in log, log[-3000:]
    # `ray job submit` shows the job's log twice (status message and tail): one distinct line.
    error_lines = sorted({line for line in log.splitlines() if line.startswith("error:")})
    assert len(error_lines) == 1, log[-3000:]
    assert bare in error_lines[0] and "pyarrow" in error_lines[0]
