"""MLflow: one experiment per study, a parent run for the study, a nested run per trial.

Runs are written from the Ray driver (a Ray Tune ``Callback``), so trial processes never talk
to MLflow and a multi-node study only needs the *driver* to reach the tracking URI. The default
URI is a SQLite file in the working directory, passed to MLflow as an absolute URI because Ray
trials run in other directories (STACK.md). Reachability is checked before any trial starts.
A local store's new experiment keeps its artifacts under the study's storage path
(``<storage>/mlflow-artifacts/<study>``), never in the working directory, and a SQLite file a
study creates loses MLflow's empty "Default" experiment (see docs/mlflow.md).
The parent run's params, tags and description: :mod:`rbm_tune.tracking.study_run`.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rbm_tune.errors import TrackingError, first_line

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "ARTIFACTS_DIR",
    "Tracker",
    "default_tracking_uri",
    "git_sha",
    "resolve_tracking_uri",
]

# Tracking-store schemes MLflow itself registers (mlflow.tracking._tracking_service.utils);
# database URIs may carry a driver (postgresql+psycopg2://). Plugins add their own schemes.
_MLFLOW_SCHEMES = ("", "file", "http", "https", "databricks", "databricks-uc", "uc")
_MLFLOW_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")

TRIAL_TAG = "rbm_tune.trial_id"
ROLE_TAG = "rbm_tune.role"
STUDY_TAG = "rbm_tune.study"


def default_tracking_uri(cwd: Path | None = None) -> str:
    """``sqlite:////abs/path/mlflow.db`` in the working directory."""
    return f"sqlite:///{((cwd or Path.cwd()) / 'mlflow.db').resolve()}"


def resolve_tracking_uri(uri: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else :func:`default_tracking_uri`.

    Relative SQLite paths and plain folders are made absolute (trials run elsewhere).
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    elif "://" not in uri:
        uri = Path(uri).resolve().as_uri()
    return uri


def git_sha() -> str:
    """The rbm-tune checkout's commit, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when the tracking store cannot be used.

    Raises:
        TrackingError: MLflow has no store for the URI's scheme, an HTTP server does not answer
            ``/health``, or a SQLite / file store's folder cannot be written.
    """
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.lower()
    known = scheme in _MLFLOW_SCHEMES or scheme.split("+")[0] in _MLFLOW_DATABASES
    if not known and scheme not in _tracking_plugins():
        raise TrackingError(
            f"MLflow has no tracking store for {scheme}:// URIs ({uri}); pass --tracking-uri "
            "(or MLFLOW_TRACKING_URI) as http://HOST:PORT of an MLflow server or "
            "sqlite:////abs/path/mlflow.db, or omit it to use ./mlflow.db"
        )
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise TrackingError(f"MLflow server {uri} answered {resp.status} on /health")
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(
                f"cannot reach the MLflow tracking server {uri} ({reason}); start it (mlflow "
                "server --host 127.0.0.1 ...), fix --tracking-uri / MLFLOW_TRACKING_URI, or "
                "omit it to use ./mlflow.db"
            ) from None
        return
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
    elif uri.startswith("file://"):
        folder = Path(uri.removeprefix("file://"))
    else:
        return  # databricks, postgres, plugins: MLflow reports their own errors
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise TrackingError(
            f"cannot write the MLflow store in {folder}; create the folder or pass "
            "--tracking-uri with a writable location"
        )


def _tracking_plugins() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="mlflow.tracking_store")}


ARTIFACTS_DIR = "mlflow-artifacts"  # in the storage path: a study's MLflow artifacts


def _artifact_location(uri: str, experiment: str, artifact_root: Path | None) -> str | None:
    """Where a new experiment of a local store keeps its artifacts: ``artifact_root /
    <experiment>`` (a study's: ``<storage path>/mlflow-artifacts/<study>``), else beside the
    database; never MLflow's default, a folder relative to whatever the cwd is. A server (or
    a database shared through one) decides itself (``--artifacts-destination``)."""
    if not uri.startswith(("sqlite:///", "file:")):
        return None
    if artifact_root is None:
        if not uri.startswith("sqlite:///"):
            return None  # the file store keeps artifacts in its own folder
        artifact_root = Path(uri.removeprefix("sqlite:///")).parent / ARTIFACTS_DIR
    return (Path(artifact_root) / experiment).resolve().as_uri()


def _fresh_sqlite(uri: str) -> bool:
    """Whether ``uri`` is a SQLite store whose file does not exist yet (MLflow creates it)."""
    if not uri.startswith("sqlite:///"):
        return False
    path = Path(uri.removeprefix("sqlite:///"))
    return not path.exists() or path.stat().st_size == 0


def _drop_empty_default(client: MlflowClient) -> None:
    """Delete the empty "Default" experiment (id 0) every new SQL store gets from MLflow.

    Called only for a SQLite file this study created: a store someone else uses keeps it.
    MLflow re-creates it only when it is missing altogether, so a deleted one stays deleted
    (``mlflow experiments restore --experiment-id 0`` brings it back).
    """
    default = client.get_experiment("0")
    if default is None or default.lifecycle_stage != "active":
        return
    if not client.search_runs(["0"], max_results=1, run_view_type=3):  # ViewType.ALL
        client.delete_experiment("0")


def _flat_str(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: ("null" if v is None else str(v)) for k, v in values.items()}


class Tracker:
    """Writes a study's runs. One instance per study, on the driver.

    Args:
        uri: tracking URI (already resolved).
        experiment: experiment name (the study name).
        study_tags: tags set on the parent run and every trial run.
        artifact_root: where a new experiment of a local store (SQLite, file) keeps its
            artifacts, in a folder named after it (default: ``mlflow-artifacts/`` beside the
            database). An existing experiment keeps its own location.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        *,
        study_tags: Mapping[str, str],
        artifact_root: Path | None = None,
    ) -> None:
        import logging

        import mlflow
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # keep store migrations off the user's terminal
            logging.getLogger(name).setLevel(logging.WARNING)

        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # MLflow's own HTTP retries back off for minutes per call; the study's callback buffers
        # and retries instead (rbm_tune.tracking.outbox), so a call may fail fast.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        self.uri = uri
        self.experiment_name = experiment
        fresh = _fresh_sqlite(uri)
        self.client: MlflowClient = MlflowClient(uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)
            if fresh:
                _drop_empty_default(self.client)
            if exp is None:
                location = _artifact_location(uri, experiment, artifact_root)
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=location
                )
            else:
                self.experiment_id = exp.experiment_id
        except mlflow.exceptions.MlflowException as err:
            first = first_line(err)
            raise TrackingError(f"MLflow at {uri} refused the experiment ({first})") from None
        self.study_tags = dict(study_tags)
        self.parent_id = self._find_or_create(
            {ROLE_TAG: "study"}, run_name=experiment, tags={**self.study_tags, ROLE_TAG: "study"}
        )

    def _find_or_create(
        self,
        match: Mapping[str, str],
        *,
        run_name: str,
        tags: Mapping[str, str],
        replace_partial: bool = False,
        start_time: int | None = None,
    ) -> str:
        """Reuse the live run whose tags equal ``match`` (a resumed study adds no duplicates).

        FAILED and KILLED runs are history (a failed attempt, an attempt cut short by a crash)
        and are never reused. With ``replace_partial``, an unfinished run that already holds
        metrics is closed as KILLED (tagged ``rbm_tune.ended_by``) and a fresh one created.
        """
        clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in match.items())
        if STUDY_TAG in self.study_tags:
            clauses += f" and tags.`{STUDY_TAG}` = '{self.study_tags[STUDY_TAG]}'"
        clauses += " and attributes.status != 'FAILED' and attributes.status != 'KILLED'"
        found = self.client.search_runs([self.experiment_id], filter_string=clauses, max_results=1)
        if found:
            old = found[0]
            if replace_partial and old.data.metrics:
                # the trial starts again from scratch: after a crash, a trial Ray Tune's last
                # snapshot still had running restarts, even one that had finished or been
                # stopped by ASHA meanwhile; its old run is history, never continued
                self.close_orphan(old.info.run_id, "restarted after the study was interrupted")
            else:
                self.client.update_run(old.info.run_id, status="RUNNING")
                return old.info.run_id
        run = self.client.create_run(
            self.experiment_id, run_name=run_name, tags=dict(tags), start_time=start_time
        )
        return run.info.run_id

    def close_orphan(self, run_id: str, why: str) -> None:
        """End a run whose process is gone as KILLED, saying why in ``rbm_tune.ended_by``."""
        self.client.set_tag(run_id, "rbm_tune.ended_by", why)
        self.client.set_terminated(run_id, status="KILLED")

    @property
    def experiment_url(self) -> str:
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}"
        return (
            f"mlflow ui --backend-store-uri {self.uri} --host 127.0.0.1  "
            f"(experiment {self.experiment_id})"
        )

    def start_trial(
        self,
        trial_id: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        *,
        replace_partial: bool = True,
        start_time: int | None = None,
    ) -> str:
        """The nested run of a trial.

        After a resume, a trial that had finished keeps its run. A trial that was cut short
        restarts from scratch in Ray Tune, so its partial run is closed as KILLED and a fresh
        one started: no epoch is ever logged twice in one run, and no run stays RUNNING.
        """
        run_id = self._find_or_create(
            {TRIAL_TAG: trial_id},
            replace_partial=replace_partial,
            start_time=start_time,
            run_name=f"trial {trial_id}",
            tags={
                **self.study_tags,
                **tags,
                TRIAL_TAG: trial_id,
                ROLE_TAG: "trial",
                "mlflow.parentRunId": self.parent_id,
            },
        )
        self.log_params(run_id, params)
        return run_id

    def log_teacher(
        self,
        digest: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        *,
        step: int,
        trained: bool,
    ) -> str:
        """The teacher's own run (role=teacher), logged once per teacher key and experiment."""
        run_id = self._find_or_create(
            {ROLE_TAG: "teacher", "rbm_tune.teacher_key": digest},  # trial runs carry the key too
            run_name=f"teacher {digest[:12]}",
            tags={
                **self.study_tags,
                ROLE_TAG: "teacher",
                "rbm_tune.teacher_key": digest,
                "rbm_tune.teacher_trained_here": str(trained).lower(),
                "mlflow.parentRunId": self.parent_id,
            },
        )
        if not self.client.get_run(run_id).data.metrics:
            self.log_params(run_id, params)
            self.log_metrics(run_id, metrics, step=step)
        self.end(run_id)
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        new = [Param(k, v) for k, v in _flat_str(params).items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[i : i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        self.log_metric_rows(run_id, [[metrics, step]])

    def log_metric_rows(self, run_id: str, rows: Sequence[Sequence[Any]]) -> None:
        """``[[metrics, step], ...]``: every row's metrics at its step, in batches of 1,000
        values (MLflow's ``log_batch`` limit)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, int(step)) for m, step in rows for k, v in m.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[start : start + 1000])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, v)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def trial_run_id(self, trial_id: str) -> str | None:
        """The live run (not FAILED / KILLED) of a trial of this study, if MLflow has one."""
        study = self.study_tags.get(STUDY_TAG, "")
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{STUDY_TAG}` = '{study}'"
            " and attributes.status != 'FAILED' and attributes.status != 'KILLED'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return found[0].info.run_id if found else None

    def trial_runs(self) -> list[Any]:
        """Every trial run of this study (for tests and the final table)."""
        study = self.study_tags.get(STUDY_TAG, "")
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'trial' and tags.`{STUDY_TAG}` = '{study}'",
            max_results=10000,
        )
