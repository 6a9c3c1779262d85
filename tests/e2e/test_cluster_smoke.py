"""A job submitted with `ray job submit` joins the running cluster (RAY_ADDRESS), not an embedded one."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import python

pytestmark = pytest.mark.e2e


def test_submitted_job_joins_the_cluster_with_token_auth(ray_head, job_submit, tmp_path):
    address, env = ray_head
    script = tmp_path / "probe.py"
    script.write_text(
        "from jobs.common import init_ray\nimport ray\ninit_ray(num_cpus=1)\n"
        "print('CLUSTER_CPUS', ray.cluster_resources().get('CPU'))\n"
    )
    done = job_submit(address, env, [python(), str(script)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # num_cpus=1 was ignored because the job joined the 2-CPU cluster.
    assert "CLUSTER_CPUS 2.0" in done.stdout


def test_cluster_refuses_a_client_without_the_token(ray_head):
    import subprocess

    from tests.e2e.conftest import RAY

    address, env = ray_head
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["HOME"] = "/nonexistent-home"  # no ~/.ray/auth_token fallback either
    probe = subprocess.run([RAY, "job", "list", "--address", address], env=no_token, capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode != 0
