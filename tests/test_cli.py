"""The real ``rbm-tune`` command in a subprocess: help, listings, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

RBM_TUNE = [sys.executable, "-m", "rbm_tune.cli"]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*RBM_TUNE, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rbm-tune: error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_commands() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("datasets", "train", "configs"):
        assert command in proc.stdout


def test_datasets_lists_presence_and_sizes(shared_data: Path) -> None:
    proc = run("datasets", "--data-root", str(shared_data))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:]}
    assert rows["cora"][1] == "yes" and rows["cora"][2] == "2708"
    assert rows["coauthor-physics"][1] == "yes"
    assert rows["ogbn-arxiv"][1] == "no" and "missing" in " ".join(rows["ogbn-arxiv"])
    assert rows["demo"][1] == "yes"


def test_datasets_honours_env_root(tmp_path: Path) -> None:
    proc = run("datasets", env={"RBM_TUNE_DATA": str(tmp_path)})
    assert proc.returncode == 0
    assert f"data root: {tmp_path}" in proc.stdout
    assert " no " in proc.stdout.splitlines()[3]


def test_configs_lists_shipped_configs() -> None:
    """``rbm-tune configs`` prints every YAML file the package ships, one name a line, sorted,
    and each name is one ``--config`` accepts."""
    from rbm_tune.commands import resolve_config_path

    proc = run("configs")
    assert proc.returncode == 0, proc.stderr
    names = proc.stdout.splitlines()
    folder = resources.files("rbm_tune") / "configs"
    shipped = sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )
    assert names == shipped
    assert {"cora-transductive-sage-rbm", "demo-transductive-sage-rbm"} <= set(names)
    assert [resolve_config_path(name).stem for name in names] == names


def test_unknown_dataset_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset: corra\nstudent: {model: mlp}\n")
    proc = run("train", "--config", str(cfg))
    assert_one_line_error(proc, "unknown dataset 'corra'", "cora")


def test_missing_data_root_is_one_line(tmp_path: Path) -> None:
    proc = run(
        "train", "--config", "cora-transductive-sage-mlp", "--data-root", str(tmp_path / "x")
    )
    assert_one_line_error(proc, "does not exist", "--data-root")


def test_missing_files_is_one_line(tmp_path: Path) -> None:
    proc = run(
        "train", "--config", "cora-transductive-sage-mlp", env={"RBM_TUNE_DATA": str(tmp_path)}
    )
    assert_one_line_error(proc, "dataset cora: missing", str(tmp_path / "Cora"), "--download")


def test_truncated_file_is_one_line(shared_data: Path, tmp_path: Path) -> None:
    raw = tmp_path / "Cora" / "raw"
    raw.mkdir(parents=True)
    for src in (shared_data / "Cora" / "raw").iterdir():
        data = src.read_bytes()
        (raw / src.name).write_bytes(data[: len(data) // 2] if src.name.endswith(".x") else data)
    proc = run("train", "--config", "cora-transductive-sage-mlp", "--data-root", str(tmp_path))
    assert_one_line_error(proc, "cannot read dataset cora", "truncated or corrupt")


def test_bad_config_key_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset: demo\nstudent: {model: rbm, num_experts: 3, k: 3}\n")
    assert_one_line_error(run("train", "--config", str(cfg)), "k=3", "num_experts=3")
    cfg.write_text("dataset: demo\ndistill: {adv_weigth: 0.1, lamda: 0.3}\n")
    assert_one_line_error(run("train", "--config", str(cfg)), "unknown distill keys ['lamda']")
    cfg.write_text("dataset: demo\nstudent: [1, 2\n")
    assert_one_line_error(run("train", "--config", str(cfg)), "not valid YAML")
    assert_one_line_error(run("train", "--config", str(tmp_path / "none.yaml")), "no config file")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset: corra\n")
    proc = run("--debug", "train", "--config", str(cfg))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.integration
def test_train_demo_smoke(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    proc = run("train", "--config", "demo-transductive-sage-rbm", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "epoch" in proc.stderr and "test_acc" in proc.stdout
    import json

    metrics = json.loads(out.read_text())
    assert metrics["student"] == "rbm" and metrics["val_acc"] > 0.5


# --- the search command: everything that can be wrong fails before Ray, in one line -------------

GOOD_SPACE = """\
study: {name: s, num_trials: 2}
dataset: demo
student:
  model: rbm
  num_experts: {int: [2, 4]}
  k: {int: [1, num_experts - 1]}
"""
BAD_SPACES = {
    "yaml": ("student: [1, 2\n", "fix the YAML syntax"),
    "top-key": (GOOD_SPACE + "colour: red\n", "colour"),
    "student-key": (GOOD_SPACE.replace("model: rbm", "model: rbm\n  num_expert: 3"), "num_expert"),
    "type": (GOOD_SPACE + "distill: {lr: fast}\n", "distill.lr"),
    "empty-range": (GOOD_SPACE + "distill: {lr: {float: []}}\n", "distill.lr"),
    "reversed": (GOOD_SPACE + "distill: {lr: {float: [0.1, 0.01]}}\n", "distill.lr"),
    "log-zero": (GOOD_SPACE + "distill: {lr: {float: [0, 0.1], log: true}}\n", "distill.lr"),
    "k-too-big": (GOOD_SPACE.replace("num_experts - 1", "4"), "student.k"),
    "unknown-bound": (GOOD_SPACE.replace("num_experts - 1", "experts - 1"), "student.k"),
    "test-metric": (
        GOOD_SPACE.replace("num_trials: 2", "num_trials: 2, metric: test_acc"),
        "test",
    ),
    "dataset": (GOOD_SPACE.replace("dataset: demo", "dataset: corra"), "corra"),
    "trials": (GOOD_SPACE.replace("num_trials: 2", "num_trials: 0"), "num_trials"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_space_is_one_line_before_ray(case: str, tmp_path: Path) -> None:
    text, fragment = BAD_SPACES[case]
    space = tmp_path / f"{case}.yaml"
    space.write_text(text)
    proc = run("--space", str(space), cwd=tmp_path)
    assert_one_line_error(proc, str(space), fragment)
    assert not (tmp_path / "rbm-tune-runs").exists()  # Ray never started


def test_missing_space_file_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run("--space", "nope.yaml", cwd=tmp_path), "nope.yaml")


def test_unreachable_tracking_server_is_one_line(tmp_path: Path) -> None:
    from tests.support.processes import free_port

    space = tmp_path / "s.yaml"
    space.write_text(GOOD_SPACE)
    uri = f"http://127.0.0.1:{free_port()}"
    proc = run("--space", str(space), "--tracking-uri", uri, cwd=tmp_path)
    assert_one_line_error(proc, "cannot reach the MLflow tracking server", uri)
    assert not (tmp_path / "rbm-tune-runs").exists()


def test_resume_of_unknown_study_is_one_line(tmp_path: Path) -> None:
    space = tmp_path / "s.yaml"
    space.write_text(GOOD_SPACE)
    proc = run("--space", str(space), "--resume", cwd=tmp_path)
    assert_one_line_error(proc, "no study 's' to resume", "without --resume")


def test_best_of_unknown_study_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run("best", "--name", "ghost", cwd=tmp_path), "no finished study")


def test_unreachable_ray_is_one_line(tmp_path: Path) -> None:
    from tests.support.processes import free_port

    space = tmp_path / "s.yaml"
    space.write_text(GOOD_SPACE)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = run("--space", str(space), "--address", address, cwd=tmp_path)
    assert_one_line_error(proc, f"cannot reach the Ray cluster at {address}")


def test_the_executable_freezes_the_heap_before_exit_and_main_in_process_does_not() -> None:
    """``rbm-tune`` (rbm_tune.cli:run) gc.freeze()s before the interpreter's final collections;
    ``main`` called inside another program (this test process) leaves its collector alone."""
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "rbm-tune"]
    assert script.value == "rbm_tune.cli:run"
    # an atexit hook registered before run() runs after its sys.exit: what did it leave frozen?
    code = (
        "import atexit, gc, sys; "
        "atexit.register(lambda: print('frozen', gc.get_freeze_count())); "
        "from rbm_tune.cli import run; sys.argv = ['rbm-tune', 'configs']; run()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    frozen = int(proc.stdout.strip().splitlines()[-1].split()[1])
    assert frozen > 10_000, proc.stdout[-300:]
    import gc

    from rbm_tune.cli import main

    before = gc.get_freeze_count()
    assert main(["configs"]) == 0
    assert gc.get_freeze_count() == before


def test_storage_path_defaults_to_rbm_tune_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--storage-path, else $RBM_TUNE_STORAGE (what submit's jobs use on the head), else
    ./rbm-tune-runs: the study, best, evaluate and export all look in the same place."""
    from rbm_tune.paths import resolve_storage

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RBM_TUNE_STORAGE", raising=False)
    assert resolve_storage(None) == tmp_path / "rbm-tune-runs"
    monkeypatch.setenv("RBM_TUNE_STORAGE", str(tmp_path / "shared"))
    assert resolve_storage(None) == tmp_path / "shared"
    assert resolve_storage(tmp_path / "given") == tmp_path / "given"
    monkeypatch.setenv("RBM_TUNE_STORAGE", "relative")
    assert resolve_storage(None) == tmp_path / "relative"
