"""Shared fixtures: paths to ../shared/data (skipped when absent), a tiny model, a local Ray session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAYMILL_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: tests that need real web pages or seeds must pass on a bare clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data directory {SHARED_DATA}, which is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny tokenizer + Llama model, built once per test session."""
    from train.tiny import tiny_model_path

    return tiny_model_path(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray session with 2 CPUs, shared by all integration tests (never a `ray start`
    cluster that an e2e test left running: address="local")."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.verbose_progress = False
    yield ray
    ray.shutdown()
