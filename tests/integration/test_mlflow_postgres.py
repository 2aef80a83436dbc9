"""MLflow the way teams run it: ``mlflow server`` over PostgreSQL with served artifacts.

A private PostgreSQL cluster (tests/support/postgres.py) on 127.0.0.1; skipped with the reason
where PostgreSQL or its Python driver is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.postgres import postgres_cluster
from tests.support.processes import free_port, stop_process_group


def _start_server(db_uri: str, artifacts: Path, port: int, timeout: float = 120) -> tuple:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = artifacts.parent / "mlflow-server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db_uri,
         "--serve-artifacts", "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-1500:]
            raise RuntimeError(
                f"mlflow server exited ({proc.returncode}) before it answered: {tail}"
            )
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                if resp.read().decode().strip() == "OK":
                    return proc, uri
        except OSError:
            time.sleep(0.5)
    stop_process_group(proc)
    raise RuntimeError(f"mlflow server did not become healthy in {timeout:.0f} s")


def test_postgres_server_with_served_artifacts_keeps_everything_once(tmp_path: Path) -> None:
    pytest.importorskip("psycopg2", reason="psycopg2-binary (the dev extra) not installed")
    from mlflow.tracking import MlflowClient

    with postgres_cluster() as db_uri:
        proc, uri = _start_server(db_uri, tmp_path / "artifacts", free_port())
        try:
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
        finally:
            stop_process_group(proc)
