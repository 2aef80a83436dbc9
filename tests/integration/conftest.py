"""Fixtures for studies on a real local Ray and a real MLflow store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _ray_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Single-node Ray on 127.0.0.1, no token files; shut Ray down after each test."""
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each study runs in its own working directory (mlflow.db and rbm-tune-runs go there),
    with its own teacher cache: the session's cache holds other tests' teachers (xdist runs
    several files in one worker)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RBM_TUNE_CACHE", str(tmp_path / "cache"))
    assert os.getcwd() == str(tmp_path)
    return tmp_path
