"""The MLflow server dies mid-study: trials keep training, nothing logged is lost.

Chosen behaviour (rbm_tune.study.mlflow_callback over rbm_tune.tracking.outbox): every MLflow write
goes through an outbox kept in order, in memory and in ``<study>/mlflow-pending.json``. While the
server is down the trials go on and the outbox is retried every few seconds. If the server is back
before the study ends, everything is written then. If it is still down at the end (after
``RBM_TUNE_MLFLOW_WAIT`` seconds), the study stops with one ``rbm-tune: error:`` line and exit 2,
its trials finished and saved; ``--resume`` writes the outbox once the server answers again. A
server that dies after the outbox was drained, while the study's summary (artifacts, the parent
run's end) is written, ends the study the same way, and ``--resume`` writes the summary.

Real processes: a real ``mlflow server`` on 127.0.0.1 (killed with SIGTERM, or with SIGKILL by
the driver itself at a chosen point through ``rbm_tune.testing.faults``' ``killpg`` action, and
restarted on the same port and store) and the ``rbm-tune`` command on a local Ray.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support.processes import (
    free_port,
    rbm_tune_cli,
    start_mlflow_server,
    stop_process_group,
)
from tests.support.study_checks import check_lost_nothing, write_study

# the studies read their teacher from the cache (training it is not what is tested)
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("teacher_in_cache")]

TRIALS = 2


def _wait_for_trial_metrics(store: Path, proc, timeout: float = 240) -> None:
    """Until some trial run holds metrics in the server's store (read directly, not via HTTP)."""
    client = MlflowClient(f"sqlite:///{store}")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        try:
            exp = client.get_experiment_by_name("outage")
            if exp is not None:
                runs = client.search_runs(
                    [exp.experiment_id], filter_string="tags.`rbm_tune.role` = 'trial'"
                )
                if any(r.data.metrics for r in runs):
                    return
        except Exception:  # noqa: BLE001 (the server is still creating the store)
            pass
        time.sleep(0.5)
    pytest.fail("no trial metrics reached MLflow")


def _start_study(tmp_path: Path, uri: str, *args: str, wait_s: str = "120", fault: str = ""):
    space = write_study(tmp_path, "outage", trials=TRIALS, epochs=6, concurrent=1)
    env = {"RBM_TUNE_CACHE": str(tmp_path / "cache"), "RBM_TUNE_MLFLOW_WAIT": wait_s}
    if fault:
        env |= {"RBM_TUNE_FAULT": fault, "RBM_TUNE_FAULT_DIR": str(tmp_path / "faults")}
    return rbm_tune_cli(
        "--space", str(space), "--cpus", "1", f"--tracking-uri={uri}", *args, cwd=tmp_path, env=env
    )


def _no_traceback(out: str) -> None:
    # no traceback from rbm-tune itself (Ray may echo a worker's SIGTERM at shutdown, prefixed
    # with the worker's "(pid=...)")
    assert not [line for line in out.splitlines() if "Traceback" in line and "pid=" not in line]


def test_server_back_mid_study_gets_every_buffered_update(tmp_path: Path) -> None:
    root, port = tmp_path / "server", free_port()
    root.mkdir()
    server, uri = start_mlflow_server(root, port)
    proc = _start_study(tmp_path, uri)
    try:
        _wait_for_trial_metrics(root / "db.sqlite", proc)
        stop_process_group(server)  # the server dies mid-study
        time.sleep(6)  # trials go on meanwhile
        assert proc.poll() is None, "the study stopped when MLflow died"
        server, _ = start_mlflow_server(root, port)
        out, _ = proc.communicate(timeout=400)
    finally:
        stop_process_group(proc, wait=5)
        stop_process_group(server)
    assert proc.returncode == 0, out[-4000:]
    assert "(from cache)" in out  # the copied teacher was the study's
    assert "does not answer" in out and "MLflow answers again" in out
    # what the server stored, read straight from its SQLite store
    store = f"sqlite:///{root / 'db.sqlite'}"
    check_lost_nothing(store, "outage", tmp_path / "rbm-tune-runs", trials=TRIALS)
    assert not (tmp_path / "rbm-tune-runs" / "outage" / "mlflow-pending.json").exists()


def _killed_at(tmp_path: Path, point: str) -> tuple[Path, int, str]:
    """A study whose driver SIGKILLs the MLflow server at fault ``point``; the server stays down
    until the study has ended, which must be one error line naming --resume, exit 2, no
    traceback. Returns the server's store folder and port, and the study's last line."""
    root, port = tmp_path / "server", free_port()
    root.mkdir()
    server, uri = start_mlflow_server(root, port)
    proc = _start_study(tmp_path, uri, wait_s="3", fault=f"{point}=killpg:{server.pid}")
    try:
        out, _ = proc.communicate(timeout=400)
    finally:
        stop_process_group(proc, wait=5)
        stop_process_group(server)
    assert proc.returncode == 2, out[-4000:]
    assert "(from cache)" in out  # the copied teacher was the study's
    last = out.strip().splitlines()[-1]
    assert last.startswith("rbm-tune: error: MLflow at") and "--resume" in last, last
    _no_traceback(out)
    return root, port, last


def _resume(tmp_path: Path, root: Path, port: int) -> MlflowClient:
    """The same server back; ``--resume`` ends cleanly and every trial is in MLflow once."""
    server, uri = start_mlflow_server(root, port)
    try:
        resumed = _start_study(tmp_path, uri, "--resume")
        out, _ = resumed.communicate(timeout=400)
        stop_process_group(resumed, wait=5)
        assert resumed.returncode == 0, out[-4000:]
    finally:
        stop_process_group(server)
    # read back from the server's own store (the server is down again)
    store = f"sqlite:///{root / 'db.sqlite'}"
    check_lost_nothing(store, "outage", tmp_path / "rbm-tune-runs", trials=TRIALS)
    return MlflowClient(store)


def test_server_down_at_the_end_stops_cleanly_and_resume_writes_the_rest(
    tmp_path: Path,
) -> None:
    # the driver kills the server once the first trial has completed: the second trial's
    # updates wait in the outbox
    root, port, last = _killed_at(tmp_path, "driver_complete@1")
    assert "update(s) wait in mlflow-pending.json" in last, last
    pending = tmp_path / "rbm-tune-runs" / "outage" / "mlflow-pending.json"
    assert pending.is_file()
    _resume(tmp_path, root, port)
    assert not pending.exists()


def test_server_down_while_the_summary_is_written_resume_writes_it(tmp_path: Path) -> None:
    """Every update was written; the server dies as the driver starts the study's summary."""
    root, port, last = _killed_at(tmp_path, "driver_summary@1")
    assert "summary" in last, last
    pending = tmp_path / "rbm-tune-runs" / "outage" / "mlflow-pending.json"
    assert not pending.exists()  # nothing was waiting
    client = _resume(tmp_path, root, port)
    exp = client.get_experiment_by_name("outage")
    (study,) = client.search_runs([exp.experiment_id], "tags.`rbm_tune.role` = 'study'")
    assert study.info.status == "FINISHED" and "best_val_acc" in study.data.metrics
    # artifacts: in the server's artifact root, by run
    logged = {p.name for p in (root / "artifacts").rglob("*") if study.info.run_id in str(p)}
    assert {"best_config.yaml", "results.csv", "trials.json"} <= logged, logged
