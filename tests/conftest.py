"""Shared fixtures: the real data in ../shared/data, a per-session cache, tiny graphs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import free_port, start_mlflow_server, stop_process_group, write_space

# Tiny tensors on a 2-core machine: extra intra-op threads only add contention (10x slower seen).
torch.set_num_threads(1)
# The same for every process a test starts (the rbm-tune CLI, Ray's workers, mlflow server):
# with pytest-xdist's workers and their studies already filling both cores, a process's own
# OpenMP team spin-waits for a core it does not get. `rbm-tune train` in a subprocess took 56 s
# under the suite's load instead of 8 s, and the whole suite 864 s instead of 607 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RBM_TUNE_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real dataset files (read-only). Absent on a user's clone: skip, but never in CI."""
    if not (SHARED_DATA / "Cora" / "raw").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the real datasets at {SHARED_DATA}")
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set RBM_TUNE_TEST_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One rbm-tune cache for the whole session, so PyG processes each dataset once."""
    return tmp_path_factory.mktemp("rbm-tune-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write to the user's ~/.cache from a test."""
    monkeypatch.setenv("RBM_TUNE_CACHE", str(cache_dir))


@pytest.fixture(scope="session")
def tiny_graph():
    """A seeded 120-node contextual SBM: 3 classes, 5 train and 10 val nodes per class."""
    from rbm_tune.data import make_graph
    from rbm_tune.data.demo import make_demo

    x, y, edge_index = make_demo(
        seed=7, num_nodes=120, num_features=12, num_classes=3, degree=6, signal=0.6
    )
    return make_graph(x, y, edge_index, name="tiny", train_per_class=5, val_per_class=10)


@pytest.fixture(scope="session")
def tiny_inductive_graph():
    from rbm_tune.data import make_graph
    from rbm_tune.data.demo import make_demo

    x, y, edge_index = make_demo(
        seed=7, num_nodes=120, num_features=12, num_classes=3, degree=6, signal=0.6
    )
    return make_graph(
        x, y, edge_index, name="tiny", setting="inductive", train_per_class=5, val_per_class=10
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` process on 127.0.0.1 and a random free port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    proc, uri = start_mlflow_server(root, free_port())
    yield uri
    stop_process_group(proc)
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def tiny_teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher cache holding the teacher of ``helpers.write_space``'s studies, trained once.

    For tests whose studies are about something else (trials, the driver, MLflow, the
    analysis after a search): copied into a test's own cache, their studies read the teacher
    instead of training it in a Ray worker (~14 s of every study on 2 cores). The studies that
    check how and where the teacher is trained start from an empty cache.
    """
    from rbm_tune.cli import main
    from rbm_tune.teacher_cache import TeacherCache

    folder = tmp_path_factory.mktemp("tiny-teacher")
    space = write_space(folder, "teacher")
    args = ["teacher", "--space", str(space), "--cache-dir", str(folder / "cache")]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0  # `rbm-tune teacher`, in-process
    assert len(TeacherCache.in_cache_dir(folder / "cache").entries()) == 1
    return folder / "cache"


@pytest.fixture
def teacher_in_cache(tmp_path: Path, tiny_teacher_cache: Path) -> Path:
    """``tmp_path / "cache"`` starts as a copy of :func:`tiny_teacher_cache` (for a module's
    ``pytest.mark.usefixtures``): the test's studies read their teacher instead of training it."""
    shutil.copytree(tiny_teacher_cache, tmp_path / "cache")
    return tmp_path / "cache"


@pytest.fixture(
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
            ],
        ),
    ]
)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each test that takes ``device`` runs on the CPU, and on CUDA where there is one (a
    test's own ``parametrize("device", ...)`` overrides this)."""
    return torch.device(request.param)
