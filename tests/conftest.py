"""Shared fixtures (the real data in ../shared/data, a per-session cache, tiny graphs) and the
test tiers.

Tiers: a plain ``pytest`` runs the unit tier, the edit-test loop (tiny tensors, in-process,
seconds per file). ``pytest --all`` runs every tier, which is what ``.ci/run`` does:

* ``integration`` (every test under ``tests/integration``): real local Ray, MLflow stores and
  servers, whole studies; minutes.
* ``reliability`` (every test under ``tests/reliability``): studies with killed trials and
  drivers, MLflow outages, bad input; minutes.
* ``slow``: unit-folder tests marked one by one (``@pytest.mark.slow``, or :data:`SLOW` here)
  because they take more than a few seconds.

Naming a file, a test or a tier folder on the command line runs what it names
(``pytest tests/integration``, ``pytest tests/test_cli.py::test_x``), and ``-m EXPR`` replaces
the default selection with EXPR (``pytest -m slow``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.support.processes import free_port, start_mlflow_server, stop_process_group
from tests.support.spaces import write_space

TESTS = Path(__file__).resolve().parent
# folder -> the marker every test in it gets
TIER_FOLDERS = {TESTS / "integration": "integration", TESTS / "reliability": "reliability"}
LONG_TIERS = ("integration", "reliability", "slow")

# Every Ray the suite starts (in-process or in a subprocess) runs without token files and without
# Ray's memory monitor. A unit-tier ray.init in token mode writes ~/.ray/auth_token into the
# user's home; and each local Ray's monitor watches the whole machine's memory, so a memory-peak
# test in the other xdist worker can make a study's Ray kill its own trial actors (the likeliest
# cause of CI's Dec 5 failure: every trial ActorDiedError within 2 s). Tests that need other
# values set them themselves.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")

# Unit-folder tests that take more than a few seconds, marked ``slow`` here rather than in their
# files (several hands edit those): file -> test function names (every case) or single case ids.
# Measured with `pytest --durations` on the 2-core machine (Dec 2026, under load): each took
# 3-235 s; together ~1,750 of the unit folder's ~1,920 test-seconds. Mostly subprocesses
# (`rbm-tune`, four teacher trainers, `mlflow server`), torch.compile, the real Coauthor /
# Amazon files, the GPU smoke script and memory peaks measured at scale.
SLOW: dict[str, tuple[str, ...]] = {
    "test_cli.py": (
        "test_bad_config_key_is_one_line",
        "test_datasets_honours_env_root",
        "test_datasets_lists_presence_and_sizes",
        "test_missing_data_root_is_one_line",
        "test_missing_files_is_one_line",
        "test_resume_of_unknown_study_is_one_line",
        "test_train_demo_smoke",
        "test_truncated_file_is_one_line",
        "test_unreachable_ray_is_one_line",
    ),
    "test_data.py": (
        "test_inductive_hides_heldout_nodes[coauthor-cs]",
        "test_inductive_hides_heldout_nodes[coauthor-physics]",
        "test_ogbn_arxiv_through_ogb",
        "test_real_dataset_sizes[amazon-computers]",
        "test_real_dataset_sizes[coauthor-cs]",
        "test_real_dataset_sizes[coauthor-physics]",
        "test_seeded_split_is_reproducible[coauthor-cs]",
        # the first Coauthor load of a session processes the raw files (6-13 s)
        "test_splits_are_disjoint_with_spec_sizes[coauthor-cs]",
        "test_splits_are_disjoint_with_spec_sizes[coauthor-physics]",
    ),
    "test_distill.py": (
        "test_bf16_precision_trains_close_to_float32[reference-moe]",
        "test_bf16_precision_trains_close_to_float32[reference-rbm]",
        "test_compiled_student_trains_like_eager",
        "test_demo_trial_rises_well_above_chance",
        "test_needed_evaluation_reports_train_accuracy_of_a_fixed_sample",
        "test_needed_evaluation_selects_the_same_epoch_and_test_accuracy",
        "test_validation_ties_reset_patience",
    ),
    "test_gpu_smoke.py": ("test_gpu_smoke_on_cpu_at_small_scale",),
    "test_memory.py": (
        "test_dataset_sizes_match_the_loaded_files",
        "test_estimate_within_25_percent_of_the_measured_peak",
        "test_eval_chunks_and_tf32_on_a_cpu_change_nothing",
    ),
    # pyarrow retries an S3 endpoint that refuses the connection for ~6 s
    "test_paths.py": ("test_best_with_a_uri_storage_is_one_line_exit_2[s3://bucket/runs]",),
    "test_payload.py": (
        "test_payload_trains_the_same_student_and_nothing_writes_into_it[inductive]",
    ),
    "test_sparse.py": (
        "test_grouped_mix_sparse_dropout_drops_non_zeros_per_pair",
        "test_grouped_mix_sparse_equals_dense_with_gradients",
        "test_sparse_linear_dropout_drops_only_non_zeros",
        "test_train_student_on_cora_sparse_auto_matches_off",
    ),
    "test_teacher_cache.py": (
        "test_cli_teacher_cache_list_and_rm",
        "test_cli_teacher_space_pretrains_the_study_teacher",
        "test_cli_train_twice_loads_the_teacher_from_the_cache",
        "test_four_processes_train_one_teacher",
        "test_lock_of_a_live_holder_times_out_and_of_a_dead_one_is_broken",
    ),
    "test_tracking.py": (
        "test_held_epochs_are_logged_at_their_own_steps_in_batches",
        "test_mlflow_server_over_http",
        "test_resume_closes_the_runs_of_trials_ray_tune_lost",
        "test_sqlite_store",
        "test_teacher_run_never_adopts_a_trial_run",
    ),
}

# Tiny tensors on a 2-core machine: extra intra-op threads only add contention (10x slower seen).
torch.set_num_threads(1)
# The same for every process a test starts (the rbm-tune CLI, Ray's workers, mlflow server):
# with pytest-xdist's workers and their studies already filling both cores, a process's own
# OpenMP team spin-waits for a core it does not get. `rbm-tune train` in a subprocess took 56 s
# under the suite's load instead of 8 s, and the whole suite 864 s instead of 607 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = TESTS.parent
SHARED_DATA = Path(os.environ.get("RBM_TUNE_TEST_DATA", REPO.parent / "shared" / "data"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all",
        action="store_true",
        default=False,
        help="run every tier: unit, slow, integration and reliability (what .ci/run runs)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    if config.getoption("--all"):
        return "rbm-tune tiers: all (unit, slow, integration, reliability)"
    if config.getoption("markexpr"):
        return f"rbm-tune tiers: as selected by -m {config.getoption('markexpr')!r}"
    return "rbm-tune tiers: unit, plus what the command line names (--all: every tier)"


def _named_paths(config: pytest.Config) -> list[Path]:
    """The files and folders named on the command line (none when pytest used testpaths)."""
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return []
    base = config.invocation_params.dir
    return [(base / arg.split("::")[0]).resolve() for arg in config.args]


def _names(item: pytest.Item, named: list[Path]) -> bool:
    """Whether the command line names ``item``: its file, or a folder inside its tier's folder."""
    path = item.path
    tiers = [folder for folder in TIER_FOLDERS if path.is_relative_to(folder)]
    for p in named:
        if p == path:
            return True
        if p.is_dir() and path.is_relative_to(p) and any(p.is_relative_to(t) for t in tiers):
            return True
    return False


def _mark_slow(item: pytest.Item) -> None:
    """Mark ``item`` slow when :data:`SLOW` names it; a name there that its file does not
    define is an error (a renamed test would silently move to the unit tier)."""
    if item.path.parent != TESTS or item.path.name not in SLOW:
        return
    names = SLOW[item.path.name]
    module = getattr(item, "module", None)
    missing = [n for n in names if module is not None and not hasattr(module, n.split("[")[0])]
    if missing:
        raise pytest.UsageError(
            f"tests/conftest.py SLOW names {missing} that {item.path.name} "
            "does not define; update SLOW"
        )
    function = getattr(item, "originalname", item.name)
    if item.name in names or function in names:
        item.add_marker(pytest.mark.slow)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tiers by folder and :data:`SLOW`; leave out the long tiers unless asked for
    (module docstring)."""
    for item in items:
        for folder, marker in TIER_FOLDERS.items():
            if item.path.is_relative_to(folder):
                item.add_marker(marker)
        _mark_slow(item)
    if config.getoption("--all") or config.getoption("markexpr"):
        return
    named = _named_paths(config)
    keep: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        long = any(item.get_closest_marker(tier) for tier in LONG_TIERS)
        (left_out if long and not _names(item, named) else keep).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = keep


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
    """A teacher cache holding the teacher of ``spaces.write_space``'s studies, trained once.

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
