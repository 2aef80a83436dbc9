"""MLflow the way teams run it: ``mlflow server`` over PostgreSQL with served artifacts.

A private PostgreSQL cluster (tests/support/postgres.py) on 127.0.0.1; skipped with the reason
where PostgreSQL or its Python driver is missing. The studies here run as ``rbm-tune``
processes against that server: one killed and resumed, then evaluated and exported; two at
once with four concurrent trials each.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import mlflow_server_over, postgres_cluster
from tests.support.processes import rbm_tune_cli, stop_process_group
from tests.support.study_checks import all_runs, check_lost_nothing, write_study


def test_postgres_server_with_served_artifacts_keeps_everything_once(tmp_path: Path) -> None:
    pytest.importorskip("psycopg2", reason="psycopg2-binary (the dev extra) not installed")
    from mlflow.tracking import MlflowClient

    with postgres_cluster() as db_uri:
        with mlflow_server_over(db_uri, tmp_path / "artifacts") as uri:
            client = MlflowClient(tracking_uri=uri)
            exp = client.create_experiment("pg-check")
            run = client.create_run(exp).info.run_id
            client.log_param(run, "lr", "0.01")
            for epoch in range(3):
                client.log_metric(run, "val_acc", 0.5 + epoch / 10, step=epoch)
            (tmp_path / "note.txt").write_text("hello")
            client.log_artifact(run, str(tmp_path / "note.txt"))
            client.set_terminated(run)

            got = client.get_run(run)
            assert got.data.params == {"lr": "0.01"}
            history = client.get_metric_history(run, "val_acc")
            assert sorted(m.step for m in history) == [0, 1, 2]
            assert [a.path for a in client.list_artifacts(run)] == ["note.txt"]
            # Served artifacts: the file lives under the server's destination, not the client's.
            assert len(list((tmp_path / "artifacts").rglob("note.txt"))) == 1
            # a study's tracker there: the server keeps its artifacts (the study's local
            # artifact root stays unused), and the server's Default experiment is not its to
            # delete, but holds none of its runs
            from rbm_tune.tracking import Tracker

            root = tmp_path / "runs" / "mlflow-artifacts"
            tracker = Tracker(uri, "pg-study", study_tags={"rbm_tune.study": "pg-study"},
                              artifact_root=root)  # fmt: skip
            tracker.log_artifact(tracker.parent_id, tmp_path / "note.txt")
            assert not root.exists()
            assert len(list((tmp_path / "artifacts").rglob("note.txt"))) == 2
            names = {e.name for e in client.search_experiments()}
            assert names == {"Default", "pg-check", "pg-study"}
            assert not client.search_runs(["0"], run_view_type=3)


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One PostgreSQL-backed ``mlflow server`` for the module's studies: (URI, artifacts)."""
    pytest.importorskip("psycopg2", reason="psycopg2-binary (the dev extra) not installed")
    artifacts = tmp_path_factory.mktemp("pg-server") / "artifacts"
    with postgres_cluster() as db_uri, mlflow_server_over(db_uri, artifacts) as uri:
        yield uri, artifacts


def _cli(cwd: Path, *args: str, timeout: float = 400, **env: str) -> tuple[int, str]:
    proc = rbm_tune_cli(*args, cwd=cwd, env={"RBM_TUNE_CACHE": str(cwd / "cache"), **env})
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:  # a killed driver leaves its local Ray behind
        stop_process_group(proc, wait=5)
    return proc.returncode, out


def _served(artifacts: Path, uri: str, run_id: str) -> list[str]:
    """The file names the server stored for one run (served artifacts live server-side)."""
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(uri).get_run(run_id).info.experiment_id
    return sorted(p.name for p in (artifacts / exp / run_id).rglob("*") if p.is_file())


@pytest.mark.usefixtures("teacher_in_cache")
def test_a_study_killed_resumed_evaluated_and_exported_against_postgres(
    tmp_path: Path, pg_server: tuple[str, Path]
) -> None:
    """A demo study on the server, its driver SIGKILLed after the 2nd trial, ``--resume``,
    ``evaluate`` and ``export``: every run, param, epoch and artifact is there exactly once."""
    import torch
    from mlflow.tracking import MlflowClient

    uri, artifacts = pg_server
    name, trials = "pgcrash", 3
    space = write_study(tmp_path, name, trials=trials, epochs=5, concurrent=2)
    common = ("--space", str(space), "--cpus", "2", "--tracking-uri", uri)
    fault = {"RBM_TUNE_FAULT": "driver_complete@2=kill", "RBM_TUNE_FAULT_DIR": str(tmp_path)}
    code, out = _cli(tmp_path, *common, **fault)
    assert code == -signal.SIGKILL, f"the planted kill did not happen:\n{out[-3000:]}"
    code, out = _cli(tmp_path, *common, "--resume")
    assert code == 0, out[-4000:]

    storage = tmp_path / "rbm-tune-runs"
    finished = check_lost_nothing(uri, name, storage, trials=trials)
    client = MlflowClient(uri)
    for run in finished.values():  # the searched parameters, each logged once with one value
        assert {"student.num_experts", "student.k", "distill.lr"} <= set(run.data.params)
    (parent,) = [r for r in all_runs(uri, name) if r.data.tags.get("rbm_tune.role") == "study"]
    listed = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert len(listed) == len(set(listed)) and {"best_config.yaml", "results.csv"} <= set(listed)
    stored = _served(artifacts, uri, parent.info.run_id)
    assert stored.count("best_config.yaml") == 1 and stored.count("results.csv") == 1, stored

    code, out = _cli(
        tmp_path, "evaluate", "--name", name, "--top", "1", "--seeds", "2",
        "--tracking-uri", uri, "--cpus", "2",
    )  # fmt: skip
    assert code == 0, out[-4000:]
    stored = _served(artifacts, uri, parent.info.run_id)
    assert stored.count("evaluate-top1-seeds2.md") == 1, stored
    assert stored.count("evaluate-top1-seeds2.json") == 1, stored
    # evaluate opened no run of its own and did not touch the trials' runs
    assert check_lost_nothing(uri, name, storage, trials=trials).keys() == finished.keys()

    code, out = _cli(tmp_path, "export", "--name", name, "--out", str(tmp_path / "student.pt"))
    assert code == 0, out[-3000:]
    student = torch.jit.load(str(tmp_path / "student.pt"))
    assert student is not None


@pytest.mark.usefixtures("teacher_in_cache")
def test_two_studies_of_four_concurrent_trials_write_to_one_server_at_once(
    tmp_path: Path, pg_server: tuple[str, Path]
) -> None:
    """Two drivers, each with 4 trials running at once, log to the same server at the same
    time: every run of both studies is there, FINISHED, with each epoch once."""
    uri, _ = pg_server
    names = ("pgone", "pgtwo")
    procs = []
    for name in names:
        space = write_study(tmp_path, name, trials=4, epochs=4, concurrent=4)
        env = {"RBM_TUNE_CACHE": str(tmp_path / "cache")}
        args = ("--space", str(space), "--cpus", "4", "--tracking-uri", uri,
                "--storage-path", str(tmp_path / "runs"))  # fmt: skip
        procs.append(rbm_tune_cli(*args, cwd=tmp_path, env=env))
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=500)[0])
    finally:
        for proc in procs:
            stop_process_group(proc, wait=5)
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out[-4000:]
    for name in names:
        check_lost_nothing(uri, name, tmp_path / "runs", trials=4)
