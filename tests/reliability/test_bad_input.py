"""Bad input costs nothing: one line ``rbm-tune: error: ...``, exit 2, and nothing written.

Every case runs the real ``rbm-tune`` executable in a fresh working directory whose MLflow store
(``$MLFLOW_TRACKING_URI``), cache (``$RBM_TUNE_CACHE``) and data root (``$RBM_TUNE_DATA``) are
folders of that directory, so "nothing written" is checked by listing it before and after.
No case contacts anything but 127.0.0.0/8 (STACK.md "Loopback only"): an unreachable Ray or
MLflow is 127.0.0.1:1, and a malformed host is rejected before any name is resolved.

The cases run two at a time in the background as soon as the module starts; each test waits
for its own case.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RBM_TUNE = Path(sys.executable).parent / "rbm-tune"
REPO = Path(__file__).resolve().parents[2]
# the same place as conftest's shared_data fixture, which each data case also requests
SHARED_DATA = Path(os.environ.get("RBM_TUNE_TEST_DATA", REPO.parent / "shared" / "data"))

SPACE = "{tmp}/s.yaml"
CONFIG = "{tmp}/c.yaml"
GOOD_SPACE = """\
study: {name: s, num_trials: 2}
dataset: demo
student:
  model: rbm
  num_experts: {int: [2, 4]}
  k: {int: [1, num_experts - 1]}
"""
GOOD_CONFIG = """\
dataset: demo
teacher: {model: sage, num_layers: 2, hidden_dim: 16, max_epochs: 15, patience: 10}
student: {model: rbm, hidden_dim: 16, num_experts: 3, k: 2}
distill: {max_epochs: 5}
"""
PWNED = "pwned"  # a file that only a YAML tag executed as Python could create
PYTHON_TAG = '!!python/object/apply:os.system ["touch {tmp}/pwned"]\n'


@dataclass(frozen=True)
class Case:
    """One bad input. ``{tmp}`` in ``args``, ``files`` and ``env`` is the case's folder."""

    args: tuple[str, ...]
    expect: str  # a fragment of the error line that names the problem or the fix
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None  # gets the case's folder
    shared_data: bool = False  # needs the real datasets


def _study_exists(tmp: Path) -> None:
    (tmp / "rbm-tune-runs" / "s").mkdir(parents=True)


def _truncated_cora(tmp: Path) -> None:
    """A copy of the real Cora whose feature file lost its second half."""
    raw = tmp / "data" / "Cora" / "raw"
    raw.mkdir(parents=True)
    for src in (SHARED_DATA / "Cora" / "raw").iterdir():
        if src.name.endswith(".x"):
            data = src.read_bytes()
            (raw / src.name).write_bytes(data[: len(data) // 2])
        else:
            shutil.copyfile(src, raw / src.name)


def space(text: str) -> dict[str, str]:
    return {"s.yaml": text}


def config(text: str) -> dict[str, str]:
    return {"c.yaml": text}


GOOD = space(GOOD_SPACE)
CFG = config(GOOD_CONFIG)

CASES: dict[str, Case] = {
    # -- the command line ------------------------------------------------------------------------
    "cli-unknown-command": Case(("frobnicate",), "invalid choice: 'frobnicate'"),
    "cli-unknown-option": Case(
        ("--space", SPACE, "--colour=red"), "unrecognized arguments: --colour=red", GOOD
    ),
    "cli-option-without-value": Case(("--space",), "argument --space: expected one argument"),
    "cli-train-without-config": Case(("train",), "the following arguments are required: --config"),
    "cli-jobs-without-action": Case(("jobs",), "the following arguments are required: ACTION"),
    "cli-gpus-negative": Case(("--space", SPACE, "--gpus", "-1"), "argument --gpus: -1", GOOD),
    "cli-gpus-abc": Case(
        ("--space", SPACE, "--gpus", "abc"), "'abc' is not a number of GPUs", GOOD
    ),
    "cli-gpus-nan": Case(("--space", SPACE, "--gpus", "nan"), "argument --gpus: nan", GOOD),
    "cli-gpus-inf": Case(("--space", SPACE, "--gpus", "inf"), "argument --gpus: inf", GOOD),
    "cli-gpus-fraction-local": Case(
        ("--space", SPACE, "--gpus", "0.5"), "a local Ray declares whole GPUs", GOOD
    ),
    "cli-gpus-with-address": Case(
        ("--space", SPACE, "--gpus", "2", "--address", "127.0.0.1:1"),
        "a cluster's GPUs are the ones its nodes have; remove --gpus",
        GOOD,
    ),
    "cli-gpus-above-cuda": Case(  # more than this machine's CUDA devices
        ("--space", SPACE, "--gpus", "64"), "CUDA device(s); give at most", GOOD
    ),
    "cli-ray-client-study": Case(
        ("--space", SPACE, "--address", "ray://127.0.0.1:1"),
        "cannot run through Ray Client (ray://); use 'rbm-tune submit",
        GOOD,
    ),
    "cli-cpus-zero": Case(("--space", SPACE, "--cpus", "0"), "argument --cpus: 0", GOOD),
    "cli-trials-zero": Case(("--space", SPACE, "--trials", "0"), "argument --trials: 0", GOOD),
    "cli-seeds-zero": Case(
        ("teacher", "--config", CONFIG, "--seeds", "0"), "argument --seeds: 0", CFG
    ),
    "cli-seed-negative": Case(
        ("train", "--config", CONFIG, "--seed", "-1"), "argument --seed: -1", CFG
    ),
    "cli-set-unknown-key": Case(
        ("--space", SPACE, "--set", "distill.max_epoch_s=9"),
        "--set distill.max_epoch_s=9: unknown key; did you mean 'distill.max_epochs'?",
        GOOD,
    ),
    "cli-set-bad-value": Case(
        ("--space", SPACE, "--set", "study.num_trials=0"), "--set study.num_trials=0: 0 is", GOOD
    ),
    "cli-set-train-study-key": Case(
        ("train", "--config", CONFIG, "--set", "study.num_trials=2"), "search-space key", CFG
    ),
    "cli-set-shipped-space-shell-list": Case(
        ("--space", "demo", "--set", "student.hidden_dim=[64, 128]"),
        "--set 'student.hidden_dim={categorical: [64, 128]}'",
    ),
    "cli-name-is-a-path": Case(
        ("--space", SPACE, "--name", "../escape"), "--name '../escape' cannot name a study", GOOD
    ),
    "cli-resume-unknown-study": Case(
        ("--space", SPACE, "--resume"), "no study 's' to resume", GOOD
    ),
    "cli-study-exists-without-resume": Case(
        ("--space", SPACE), "pass --resume to continue it", GOOD, setup=_study_exists
    ),
    "cli-warm-start-unknown-study": Case(
        ("--space", SPACE, "--warm-start", "gone"), "--warm-start gone: no finished study", GOOD
    ),
    "best-unknown-study": Case(("best", "--name", "nope"), "no finished study 'nope'"),
    "evaluate-unknown-study": Case(("evaluate", "--name", "nope"), "no finished study 'nope'"),
    "export-unknown-study": Case(
        ("export", "--name", "nope", "--out", "{tmp}/student.pt"), "no finished study 'nope'"
    ),
    # -- space files -----------------------------------------------------------------------------
    "space-missing-file": Case(("--space", "{tmp}/nope.yaml"), "no such space"),
    "space-yaml-syntax": Case(
        ("--space", SPACE), "fix the YAML syntax", space("student: [1, 2\n")
    ),
    "space-duplicate-key": Case(
        ("--space", SPACE), "duplicate key 'dataset'; keep one", space(GOOD_SPACE + "dataset: x\n")
    ),
    "space-k-not-below-experts": Case(
        ("--space", SPACE),
        "student.k",
        space(GOOD_SPACE.replace("num_experts - 1", "num_experts")),
    ),
    "space-unknown-key": Case(
        ("--space", SPACE), "colour: unknown key", space(GOOD_SPACE + "colour: red\n")
    ),
    "space-empty-categorical": Case(
        ("--space", SPACE),
        "student.hidden_dim",
        space(GOOD_SPACE + "  hidden_dim: {categorical: []}\n"),
    ),
    "space-low-above-high": Case(
        ("--space", SPACE),
        "distill.lr",
        space(GOOD_SPACE + "distill: {lr: {float: [0.1, 0.01]}}\n"),
    ),
    "space-top-level-list": Case(
        ("--space", SPACE), "not a mapping", space("- dataset: demo\n- student: {model: mlp}\n")
    ),
    "space-empty-file": Case(("--space", SPACE), "not a mapping", space("")),
    "space-unknown-dataset": Case(
        ("--space", SPACE), "corra", space(GOOD_SPACE.replace("dataset: demo", "dataset: corra"))
    ),
    "space-python-tag": Case(("--space", SPACE), "remove the tag", space(PYTHON_TAG)),
    # -- trial configs ---------------------------------------------------------------------------
    "config-missing-file": Case(("train", "--config", "{tmp}/none.yaml"), "no config file"),
    "config-k-not-below-experts": Case(
        ("train", "--config", CONFIG), "k=3", config(GOOD_CONFIG.replace("k: 2", "k: 3"))
    ),
    "config-unknown-model": Case(
        ("train", "--config", CONFIG),
        "'transformer'",
        config(GOOD_CONFIG.replace("model: rbm", "model: transformer")),
    ),
    "config-python-tag": Case(("train", "--config", CONFIG), "remove the tag", config(PYTHON_TAG)),
    "config-teacher-python-tag": Case(
        ("teacher", "--config", CONFIG), "remove the tag", config(PYTHON_TAG)
    ),
    # -- data roots ------------------------------------------------------------------------------
    "data-root-missing": Case(
        ("train", "--config", "cora-transductive-sage-mlp", "--data-root", "{tmp}/nowhere"),
        "does not exist; pass --data-root",
    ),
    "data-files-missing-in-a-study": Case(
        ("--space", SPACE),
        "dataset cora: missing",
        {**space(GOOD_SPACE.replace("dataset: demo", "dataset: cora")), "data/README": "empty"},
    ),
    "data-cora-truncated": Case(
        ("train", "--config", "cora-transductive-sage-mlp"),
        "truncated or corrupt",
        setup=_truncated_cora,
        shared_data=True,
    ),
    # -- cache dirs ------------------------------------------------------------------------------
    "cache-dir-is-a-file-train": Case(
        ("train", "--config", CONFIG, "--cache-dir", "{tmp}/afile"),
        "is a file, not a folder",
        {**CFG, "afile": "x"},
    ),
    "cache-dir-is-a-file-study": Case(
        ("--space", SPACE, "--cache-dir", "{tmp}/afile"),
        "is a file, not a folder",
        {**GOOD, "afile": "x"},
    ),
    "cache-env-is-a-file-teacher": Case(
        ("teacher", "--config", CONFIG),
        "is a file, not a folder",
        {**CFG, "afile": "x"},
        env={"RBM_TUNE_CACHE": "{tmp}/afile"},
    ),
    "cache-dir-ftp-study": Case(
        ("--space", SPACE, "--cache-dir", "ftp://127.0.0.1:1/cache"),
        "--cache-dir 'ftp://127.0.0.1:1/cache': unknown URI scheme 'ftp'",
        GOOD,
    ),
    "cache-rm-unknown-key": Case(
        ("cache", "rm", "deadbeef"), "no teacher cache entry matches 'deadbeef'"
    ),
    # -- MLflow tracking URIs --------------------------------------------------------------------
    "tracking-unreachable": Case(
        ("--space", SPACE, "--tracking-uri", "http://127.0.0.1:1"),
        "cannot reach the MLflow tracking server http://127.0.0.1:1",
        GOOD,
    ),
    "tracking-env-unreachable": Case(
        ("--space", SPACE),
        "cannot reach the MLflow tracking server http://127.0.0.1:1",
        GOOD,
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"},
    ),
    "tracking-sqlite-folder-missing": Case(
        ("--space", SPACE, "--tracking-uri", "sqlite:///{tmp}/nowhere/mlflow.db"),
        "cannot write the MLflow store in",
        GOOD,
    ),
    "tracking-unsupported-scheme": Case(
        ("--space", SPACE, "--tracking-uri", "ftp://127.0.0.1:1/mlruns"),
        "MLflow has no tracking store for ftp://",
        GOOD,
    ),
    # -- Ray addresses ---------------------------------------------------------------------------
    "ray-unreachable": Case(
        ("--space", SPACE, "--address", "127.0.0.1:1"),
        "cannot reach the Ray cluster at 127.0.0.1:1",
        GOOD,
    ),
    "ray-bad-port": Case(
        ("--space", SPACE, "--address", "not-a-host:xx"), "is not a Ray address", GOOD
    ),
    "ray-http-address": Case(
        ("--space", SPACE, "--address", "http://127.0.0.1:8265"), "is not a Ray address", GOOD
    ),
    # -- Ray jobs --------------------------------------------------------------------------------
    "submit-gpus": Case(
        ("submit", "--space", SPACE, "--gpus", "1", "--address", "http://127.0.0.1:1"),
        "rbm-tune submit --gpus 1: a cluster's GPUs",
        GOOD,
    ),
    "submit-unsupported-scheme": Case(
        ("submit", "--space", SPACE, "--address", "ftp://127.0.0.1:1"),
        "is not a Ray dashboard address",
        GOOD,
    ),
    "submit-unreachable": Case(
        ("submit", "--space", SPACE, "--address", "http://127.0.0.1:1"),
        "cannot reach the Ray job server at http://127.0.0.1:1",
        GOOD,
    ),
    "jobs-status-unreachable": Case(
        ("jobs", "status", "X", "--address", "http://127.0.0.1:1"),
        "cannot reach the Ray job server at http://127.0.0.1:1",
    ),
    # -- devices ---------------------------------------------------------------------------------
    "train-device-cuda-3": Case(
        ("train", "--config", CONFIG, "--device", "cuda:3"), "--device cuda:3:", CFG
    ),
    "train-device-unknown": Case(
        ("train", "--config", CONFIG, "--device", "banana"), "is not a device", CFG
    ),
}


@dataclass
class Outcome:
    proc: subprocess.CompletedProcess[str]
    tmp: Path
    new_paths: list[str]
    leftovers: bool  # processes of the run's session still alive after it exited


def _user_env() -> dict[str, str]:
    """This process's environment as a user's shell would pass it on. Read on the main thread,
    once: pytest sets and deletes PYTEST_CURRENT_TEST there at every test phase, and iterating
    ``os.environ`` from a worker thread meanwhile raised KeyError (seen in a CI run)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "MLFLOW_", "RBM_TUNE_", "AWS_", "GOOGLE_"))
        and k != "PYTEST_CURRENT_TEST"  # PyG keeps quiet under pytest; be a real user's run
    }


def _env(tmp: Path, case: Case, inherited: dict[str, str]) -> dict[str, str]:
    return {
        **inherited,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
        "RBM_TUNE_CACHE": str(tmp / "cache"),
        "RBM_TUNE_DATA": str(tmp / "data"),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONWARNINGS": "ignore",  # a library's warning would be a second stderr line
        **{k: _at(v, tmp) for k, v in case.env.items()},
    }


def _at(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


def _listing(tmp: Path) -> set[str]:
    return {str(p.relative_to(tmp)) for p in tmp.rglob("*")}


def _is_scaffold(tmp: Path, rel: str) -> bool:
    """What a data case may leave: the folders, raw-file links and lock of the dataset's
    working copy in the cache; never a processed file, never a teacher."""
    path = tmp / rel
    if rel == "cache":
        return True
    scratch = rel.startswith("cache/processed") and "/processed/" not in rel.removeprefix("cache/")
    return scratch and (path.is_symlink() or path.is_dir() or path.name == ".lock")


def _run(case: Case, tmp: Path, inherited: dict[str, str]) -> Outcome:
    for name, text in case.files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(_at(text, tmp))
    if case.setup is not None:
        case.setup(tmp)
    before = _listing(tmp)
    args = [str(RBM_TUNE), *(_at(a, tmp) for a in case.args)]
    with subprocess.Popen(
        args,
        cwd=tmp,
        env=_env(tmp, case, inherited),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: whatever it starts can be found
    ) as popen:
        try:
            stdout, stderr = popen.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            stdout, stderr = popen.communicate()
        leftovers = _kill_group(popen.pid)  # e.g. a Ray it should never have started
    proc = subprocess.CompletedProcess(args, popen.returncode, stdout, stderr)
    new = sorted(p for p in _listing(tmp) - before if not _is_scaffold(tmp, p))
    return Outcome(proc, tmp, new, leftovers)


def _kill_group(pgid: int) -> bool:
    """SIGKILL what is left of a finished run's process group; whether anything was."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Outcome]]]:
    """Every case, started in the background two at a time (the machine has 2 cores)."""
    have_data = (SHARED_DATA / "Cora" / "raw").is_dir()
    inherited = _user_env()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(_run, case, tmp_path_factory.mktemp(name), inherited)
            for name, case in CASES.items()
            if have_data or not case.shared_data
        }
        yield futures
        for future in futures.values():
            future.cancel()


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 28


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    name: str, outcomes: dict[str, Future[Outcome]], request: pytest.FixtureRequest
) -> None:
    case = CASES[name]
    if case.shared_data:
        request.getfixturevalue("shared_data")  # skips (or fails in CI) without the datasets
    out = outcomes[name].result()
    proc, tmp = out.proc, out.tmp
    shown = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 2, shown
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, shown
    assert lines[0].startswith("rbm-tune: error: "), shown
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    assert proc.stdout == "", shown
    assert _at(case.expect, tmp) in lines[0], shown
    # nothing written: no MLflow store, no teacher, no Ray results, nothing else either
    assert out.new_paths == [], out.new_paths
    assert not (tmp / "mlflow.db").exists() and not (tmp / "mlartifacts").exists()
    teachers = tmp / "cache" / "teachers"
    assert not teachers.exists() or not any(teachers.iterdir())
    assert not (tmp / PWNED).exists()  # no YAML tag ever runs code
    assert not out.leftovers, "the run left processes behind (a Ray?)"


def test_a_closed_stdout_is_not_a_traceback(tmp_path: Path) -> None:
    """``rbm-tune configs | head -1``: the reader went away; exit 141 (SIGPIPE), no noise."""
    proc = subprocess.Popen(
        [str(RBM_TUNE), "configs"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before it writes a byte
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and stderr == ""
