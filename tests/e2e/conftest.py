"""Real Ray clusters for end-to-end tests: `ray start` processes with token auth, on this machine.

- `ray_head`: one head node with 2 CPUs (the single-node tests).
- `ray_two_nodes`: a head node plus a second raylet (`ray start --address ...`), 1 CPU each,
  so jobs really schedule across two nodes; tests may add and kill further nodes on it.

Every node gets its own `--temp-dir`, and teardown kills exactly the processes of that cluster
(found by their temp dir or GCS port, plus all their descendants) by pid. It never runs
`ray stop`, which kills every Ray process of the user on the machine: other people's local
Ray sessions and clusters on this shared machine included.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env() -> dict[str, str]:
    """Environment for `ray start`, the CLI and (inherited by) every job driver and worker."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    # One static token shared by every node, the job drivers and the CLI (highest-precedence source).
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_TRAIN_V2_ENABLED="1",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return env


@dataclass
class RayNode:
    """One `ray start` process tree, identified by its own temp dir."""

    temp_dir: Path
    num_cpus: int
    head: bool

    def processes(self) -> list[psutil.Process]:
        """This node's daemons (their command line names the temp dir) and all their descendants
        (raylet children rename themselves, e.g. `ray::IDLE`, `ray::DashboardAgent`)."""
        marker = str(self.temp_dir) + "/"
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if marker in " ".join(proc.info["cmdline"] or []):
                    found[proc.pid] = proc
                    found.update((c.pid, c) for c in proc.children(recursive=True))
            except psutil.Error:
                continue
        return list(found.values())

    def raylet(self) -> psutil.Process:
        for proc in self.processes():
            try:
                if Path(proc.cmdline()[0]).name == "raylet":
                    return proc
            except (psutil.Error, IndexError):
                continue
        raise LookupError(f"no raylet running under {self.temp_dir}")

    def node_id(self) -> str:
        """The Ray node id, read from the raylet's own command line."""
        for arg in self.raylet().cmdline():
            if arg.startswith("--node_id="):
                return arg.split("=", 1)[1]
        raise LookupError("the raylet's command line names no --node_id")


@dataclass
class RayCluster:
    """A head node and extra worker nodes started with the real `ray start` CLI."""

    env: dict[str, str]
    root: Path
    nodes: list[RayNode] = field(default_factory=list)
    gcs_port: int = 0
    dashboard: str = ""

    def _start(self, args: list[str], num_cpus: int, head: bool) -> RayNode:
        # Unix socket paths live under the temp dir and must stay short (< 108 bytes).
        node = RayNode(Path(tempfile.mkdtemp(prefix="n", dir=self.root)), num_cpus, head)
        self.nodes.append(node)  # before starting: teardown must find a half-started node too
        # The dashboard agent's HTTP port defaults to a fixed 52365: a second node (or another
        # Ray on the machine) would collide on it and `ray job submit` would hang waiting for it.
        cmd = [RAY, "start", *args, f"--num-cpus={num_cpus}", f"--temp-dir={node.temp_dir}",
               f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
               "--disable-usage-stats"]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return node

    def start_head(self, num_cpus: int) -> RayNode:
        self.gcs_port, dash_port = free_port(), free_port()
        node = self._start(["--head", f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1",
                            f"--dashboard-port={dash_port}", f"--ray-client-server-port={free_port()}",
                            "--include-dashboard=true"], num_cpus, head=True)
        self.dashboard = f"http://127.0.0.1:{dash_port}"
        wait_for_dashboard(self.dashboard, self.env)
        return node

    def add_node(self, num_cpus: int) -> RayNode:
        node = self._start([f"--address=127.0.0.1:{self.gcs_port}"], num_cpus, head=False)
        self.wait_for_alive()
        return node

    def alive_nodes(self) -> list[dict]:
        listed = subprocess.run([RAY, "list", "nodes", "--address", self.dashboard, "--format", "json",
                                 "--filter", "state=ALIVE"], env=self.env, capture_output=True, text=True, timeout=60)
        return json.loads(listed.stdout) if listed.returncode == 0 and listed.stdout.strip() else []

    def wait_for_alive(self, expected: int | None = None, timeout: float = 90) -> list[dict]:
        """Wait until the GCS lists `expected` alive nodes (default: every node started)."""
        expected = expected if expected is not None else len(self.nodes)
        deadline = time.time() + timeout
        while time.time() < deadline:
            alive = self.alive_nodes()
            if len(alive) == expected:
                return alive
            time.sleep(1)
        raise TimeoutError(f"expected {expected} alive Ray nodes, the GCS lists {len(self.alive_nodes())}")

    def kill_node(self, node: RayNode, sig: int = signal.SIGKILL) -> None:
        """A node leaves: signal its raylet and everything under it (workers, agents)."""
        kill_processes(node.processes(), sig)
        self.nodes.remove(node)

    def processes_named(self, fragment: str) -> list[psutil.Process]:
        """This cluster's processes whose title or command line contains `fragment`."""
        out = []
        for node in self.nodes:
            for proc in node.processes():
                try:
                    if fragment in " ".join(proc.cmdline()):
                        out.append(proc)
                except psutil.Error:
                    continue
        return out

    def stop(self) -> None:
        for node in reversed(self.nodes):  # worker nodes first, the head (GCS) last
            kill_processes(node.processes(), signal.SIGTERM)
        time.sleep(1)
        for node in reversed(self.nodes):
            kill_processes(node.processes(), signal.SIGKILL)
        self.nodes.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def kill_processes(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass
    if sig == signal.SIGKILL:
        psutil.wait_procs(procs, timeout=10)


def wait_for_dashboard(address: str, env: dict, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        probe = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True, text=True)
        if probe.returncode == 0:
            return
        last = probe.stderr[-500:]
        time.sleep(2)
    raise TimeoutError(f"Ray dashboard at {address} did not come up: {last}")


def _skip_without_cli() -> None:
    if not Path(RAY).exists():
        pytest.skip("the `ray` CLI is not installed beside this Python")


@contextlib.contextmanager
def running_cluster(node_cpus: list[int], extra_env: dict[str, str] | None = None) -> Iterator[RayCluster]:
    """A cluster of a head node and one extra node per further entry of `node_cpus`; torn down
    (by pid) however the block ends, also when a node fails to start."""
    # Short root under /tmp: Ray's socket paths are built from it.
    cluster = RayCluster({**cluster_env(), **(extra_env or {})}, Path(tempfile.mkdtemp(prefix="rm-", dir="/tmp")))
    try:
        try:
            cluster.start_head(node_cpus[0])
            for cpus in node_cpus[1:]:
                cluster.add_node(cpus)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"could not start the Ray cluster: {exc}")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def ray_head():
    """Start a head node with token auth; yield (dashboard address, env for the `ray` CLI)."""
    _skip_without_cli()
    with running_cluster([2]) as cluster:
        yield cluster.dashboard, cluster.env


@pytest.fixture(scope="session")
def ray_two_nodes():
    """A head node and a second raylet, 1 CPU each, token auth on; yields the RayCluster.

    GCS health checks run every second with a threshold of 3 (defaults: 3 s and 5), so a
    node that a fault test kills is declared dead in seconds rather than about half a minute."""
    _skip_without_cli()
    # No PYTHONPATH to the checkout: jobs find their code through `--working-dir`, as a user's do.
    with running_cluster([1, 1], {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                                  "PYTHONPATH": ""}) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def e2e_cache(tmp_path_factory) -> Path:
    """One RAYMILL_CACHE for every job of the session: the sample crawl and the tiny models are
    built once, by the first job that needs them."""
    return tmp_path_factory.mktemp("raymill-cache")


def job_command(cluster: RayCluster, entrypoint: list[str], env_vars: dict[str, str] | None = None,
                working_dir: bool = True) -> list[str]:
    """`ray job submit` as a user types it: the checkout as working_dir (the job's cwd on the
    cluster), job-wide environment variables through the runtime_env (the CLI's own environment
    never reaches the job: drivers and workers inherit `ray start`'s environment)."""
    cmd = [RAY, "job", "submit", "--address", cluster.dashboard]
    if working_dir:
        cmd += ["--working-dir", str(REPO)]
    if env_vars:
        cmd += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
    return [*cmd, "--", *entrypoint]


def submit_job(cluster: RayCluster, entrypoint: list[str], env_vars: dict[str, str] | None = None,
               timeout: float = 600, working_dir: bool = True) -> subprocess.CompletedProcess:
    """Submit and follow the job to its end; the CLI exits non-zero when the job fails."""
    return subprocess.run(job_command(cluster, entrypoint, env_vars, working_dir), env=cluster.env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def start_job(cluster: RayCluster, entrypoint: list[str], env_vars: dict[str, str] | None = None,
              log: Path | None = None) -> subprocess.Popen:
    """Submit in the background (the CLI follows the job's logs into `log`), for fault tests that act mid-run."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - the child owns it until it exits
    return subprocess.Popen(job_command(cluster, entrypoint, env_vars), env=cluster.env, stdout=out,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO)


def job_output(proc: subprocess.Popen, log: Path, timeout: float = 600) -> tuple[int, str]:
    """Wait for a `start_job` CLI to exit: (its exit code, the job's log)."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the job ran past {timeout:.0f} s; its log ends:\n{log.read_text(errors='replace')[-4000:]}")
    return code, log.read_text(errors="replace")


def wait_until(predicate, timeout: float, what: str, every: float = 0.2):
    """Poll `predicate` until it returns something truthy; fail the test naming `what`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def list_state(cluster: RayCluster, kind: str, *filters: str) -> list[dict]:
    """`ray list actors|tasks ... --detail` through the state API (dead actors and finished tasks included)."""
    cmd = [RAY, "list", kind, "--address", cluster.dashboard, "--format", "json", "--detail", "--limit", "10000"]
    for f in filters:
        cmd += ["--filter", f]
    done = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # With nothing to list the CLI prints "No resource in the cluster" instead of JSON.
    return json.loads(done.stdout) if done.stdout.lstrip().startswith("[") else []


def dataset_rows(directory: Path) -> dict[str, tuple[str | None, str | None]]:
    """Every row of a curate-style dataset: id -> (drop_stage, drop_reason); kept rows map to (None, None).
    Two runs over the same input that agree here kept and dropped the same rows for the same reasons."""
    import pyarrow.dataset as pads

    rows: dict[str, tuple[str | None, str | None]] = {}
    for part in ("data", "dropped"):
        files = sorted(str(f) for f in (directory / part).glob("*.parquet"))
        if not files:
            continue
        columns = ["id"] + (["drop_stage", "drop_reason"] if part == "dropped" else [])
        table = pads.dataset(files, format="parquet").to_table(columns=columns)
        stages = table.column("drop_stage").to_pylist() if part == "dropped" else [None] * table.num_rows
        reasons = table.column("drop_reason").to_pylist() if part == "dropped" else [None] * table.num_rows
        for row_id, stage, reason in zip(table.column("id").to_pylist(), stages, reasons):
            assert row_id not in rows, f"row {row_id} written twice in {directory}"
            rows[row_id] = (stage, reason)
    return rows


CURATE_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="session")
def curate_reference(ray_two_nodes, e2e_cache, tmp_path_factory) -> Path:
    """An undisturbed curate run of the embedded sample crawl on the two-node cluster: the
    multi-node test checks it, the fault tests compare their disturbed runs with it."""
    out = tmp_path_factory.mktemp("reference") / "curated"
    started = time.time()
    done = submit_job(ray_two_nodes, [python(), "jobs/curate.py", "--output", str(out)],
                      {"RAYMILL_CACHE": str(e2e_cache)})
    CURATE_SECONDS["reference"] = time.time() - started
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out


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
