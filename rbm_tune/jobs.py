"""``rbm-tune submit`` and ``rbm-tune jobs``: a study as a Ray job on a remote cluster.

The study is validated here (the space file is parsed before anything is sent), then submitted
through Ray's Job Submission SDK. The job's runtime environment carries

- the space file, as the job's ``working_dir`` (so a space edited on the laptop is the one run);
- this copy of the ``rbm_tune`` package, as a ``py_modules`` entry (so the cluster runs the code
  you have, not whatever was installed when the nodes were set up). The cluster still needs
  rbm-tune's dependencies (torch, torch-geometric, ray, optuna, mlflow): see ``cluster/``.
  ``--use-installed`` runs the cluster's installed rbm-tune instead.

On the cluster the job's driver runs ``python -m rbm_tune --space FILE --address auto ...``
on the head node. A job's working directory is a temporary folder that Ray deletes, so paths
the user did not give default to the head's home, not to that folder:

- Ray results: ``$RBM_TUNE_STORAGE`` else ``$HOME/rbm-tune-runs``;
- MLflow: ``$MLFLOW_TRACKING_URI`` else ``sqlite:///$HOME/rbm-tune-runs/mlflow.db``;
- teacher cache and data: the usual defaults (``$RBM_TUNE_CACHE``, ``$RBM_TUNE_DATA``, else
  ``~/.cache/rbm-tune``), which already live in the home folder.

For a multi-node cluster every one of these must be shared storage or a server that every node
reaches (``cluster/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rbm_tune.errors import ConfigError, RbmTuneError, first_line

__all__ = ["jobs", "submit"]

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

# Study options passed through to the job's ``rbm-tune --space`` command, verbatim.
_FORWARDED = (
    ("trials", "--trials"),
    ("name", "--name"),
    ("data_root", "--data-root"),
    ("cache_dir", "--cache-dir"),
)
# Paths whose default must not be the job's temporary working directory: shell defaults that
# the head expands when it runs the entrypoint.
_STORAGE_DEFAULT = '"${RBM_TUNE_STORAGE:-$HOME/rbm-tune-runs}"'
_TRACKING_DEFAULT = '"${MLFLOW_TRACKING_URI:-sqlite:///$HOME/rbm-tune-runs/mlflow.db}"'


def dashboard_address(address: str | None) -> str:
    """``--address``, else ``$RAY_API_SERVER_ADDRESS``, else an ``http://`` ``$RAY_ADDRESS``,
    else the local dashboard; always ``http(s)://host:port`` without a trailing slash."""
    env_http = os.environ.get("RAY_ADDRESS", "")
    value = (
        address
        or os.environ.get("RAY_API_SERVER_ADDRESS")
        or (env_http if env_http.startswith(("http://", "https://")) else "")
        or DEFAULT_DASHBOARD
    ).rstrip("/")
    if "://" not in value:
        value = f"http://{value}"
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            f"--address {address or value!r} is not a Ray dashboard address; give "
            "http://HEAD:8265 (the head's dashboard / job server)"
        )
    try:
        parsed.port  # noqa: B018 (validates the port)
    except ValueError:
        raise ConfigError(f"--address {value!r} has a bad port; give http://HEAD:8265") from None
    return value


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    parsed = urlparse(address)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise RbmTuneError(
            f"cannot reach the Ray job server at {address} ({reason}); start the cluster "
            "(ray start --head --dashboard-host 127.0.0.1) and reach it through "
            "'ray dashboard cluster.yaml' or an ssh tunnel (ssh -L 8265:127.0.0.1:8265 HEAD), "
            "or fix --address (http://HEAD:8265)"
        ) from None


def _client(address: str | None) -> Any:
    url = dashboard_address(address)
    _check_reachable(url)
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(url)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = first_line(err)
        raise RbmTuneError(
            f"the Ray job server at {url} did not answer ({first}); check that the head runs "
            "ray[default] with its dashboard on and that the address is its dashboard port"
        ) from None


def _entrypoint(
    args: argparse.Namespace, space_file: str, warm_start: list[str] | None = None
) -> str:
    """The study command the head runs; ``warm_start``: the ``--warm-start`` values as the job
    sees them (:func:`_ship_warm_start`), default ``args.warm_start`` verbatim."""
    python = shlex.quote(args.python)
    parts = [f"{python} -m rbm_tune --space {shlex.quote(space_file)} --address auto"]
    for attr, flag in _FORWARDED:
        value = getattr(args, attr, None)
        if value is not None:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    for item in getattr(args, "overrides", None) or ():
        parts.append(f"--set {shlex.quote(item)}")
    for source in warm_start if warm_start is not None else args.warm_start or ():
        parts.append(f"--warm-start {shlex.quote(source)}")
    if args.resume:
        parts.append("--resume")
    storage = shlex.quote(args.storage_path) if args.storage_path else _STORAGE_DEFAULT
    tracking = shlex.quote(args.tracking_uri) if args.tracking_uri else _TRACKING_DEFAULT
    parts.append(f"--storage-path {storage} --tracking-uri {tracking}")
    return " ".join(parts)


def _ship_warm_start(sources: list[str] | None, workdir: Path) -> list[str]:
    """``--warm-start`` values for the job: an earlier study folder (or its results.csv) on
    this machine travels with the job (its trials.json and results.csv, copied into the job's
    working directory as ``warm-start/<i>``); anything else is a study name the head resolves
    in its own storage path."""
    if not sources:
        return []
    from rbm_tune.study.warm_start import study_folder  # imports optuna and Ray Tune

    shipped: list[str] = []
    for i, source in enumerate(sources):
        path = Path(source).expanduser()
        folder = study_folder(path)
        if not path.exists():
            shipped.append(source)
            continue
        if not (folder / "trials.json").is_file():
            raise ConfigError(
                f"--warm-start {source}: no finished study there (no trials.json in {folder}); "
                "name a study folder, its results.csv, or a study in the cluster's storage path"
            )
        target = workdir / "warm-start" / str(i)
        target.mkdir(parents=True)
        for name in ("trials.json", "results.csv"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, target / name)
        shipped.append(f"warm-start/{i}")
    return shipped


def _runtime_env(workdir: Path, use_installed: bool) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": str(workdir), "env_vars": {"PYTHONUNBUFFERED": "1"}}
    if not use_installed:
        import rbm_tune

        env["py_modules"] = [str(Path(rbm_tune.__file__).resolve().parent)]
    return env


def submit(args: argparse.Namespace) -> int:
    """Validate the space here, submit the study as a Ray job, stream its logs until it ends.

    Ctrl-C detaches (the job goes on). Exit status: 0 when the job succeeded or on detach,
    1 when it failed or was stopped, 2 for bad input (one ``rbm-tune: error:`` line).
    """
    from rbm_tune.commands import check_study_name
    from rbm_tune.search_space import load_space

    # one-line error before any network traffic
    space = load_space(args.space, getattr(args, "overrides", None) or ())
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials {args.trials}: give at least 1")
    if args.gpus is not None:
        raise ConfigError(
            f"rbm-tune submit --gpus {args.gpus:g}: a cluster's GPUs are the ones its nodes "
            "have; remove --gpus (resources.gpus_per_trial in the space sets each trial's share)"
        )
    check_study_name(args.name)
    name = args.name or space.study.name
    with tempfile.TemporaryDirectory(prefix="rbm-tune-job-") as tmp:
        workdir = Path(tmp)
        space_file = Path(space.path).name
        shutil.copyfile(space.path, workdir / space_file)
        warm = _ship_warm_start(getattr(args, "warm_start", None), workdir)
        entrypoint = _entrypoint(args, space_file, warm)
        client = _client(args.address)
        deadline = time.monotonic() + 90
        while True:
            try:
                job_id = client.submit_job(
                    entrypoint=entrypoint,
                    runtime_env=_runtime_env(workdir, args.use_installed),
                    submission_id=args.job_id,
                    metadata={"rbm_tune.study": name, "rbm_tune.space": space_file},
                )
                break
            except (RuntimeError, ConnectionError) as err:
                first = first_line(err, 300)
                # a head that just started has no job agent yet: Ray says to try again later
                if "try again later" in first and time.monotonic() < deadline:
                    time.sleep(2)
                    continue
                raise RbmTuneError(f"the Ray job server refused the job ({first})") from None
    print(f"submitted job {job_id} (study {name}) to {dashboard_address(args.address)}")
    print(f"entrypoint: {entrypoint}", file=sys.stderr)
    if args.no_wait:
        print(job_id)
        return 0
    return _follow(client, job_id)


def _follow(client: Any, job_id: str) -> int:
    """Stream a job's logs until it ends; Ctrl-C detaches. Returns the exit status."""
    import threading

    # The log stream runs in a daemon thread: Ctrl-C in the main thread detaches at once,
    # without waiting for asyncio to cancel and close the websocket (which can take long).
    streamer = threading.Thread(target=asyncio.run, args=(_tail(client, job_id),), daemon=True)
    try:
        streamer.start()
        while streamer.is_alive():
            streamer.join(timeout=0.5)
        status = _wait_terminal(client, job_id)
    except KeyboardInterrupt:
        print(
            f"\ndetached; job {job_id} goes on. Follow it with 'rbm-tune jobs logs {job_id} "
            f"--follow', stop it with 'rbm-tune jobs stop {job_id}'",
            file=sys.stderr,
        )
        print(job_id)
        return 0
    info = client.get_job_info(job_id)
    print(f"job {job_id}: {status}" + (f" ({info.message})" if info.message else ""))
    print(job_id)
    return 0 if status == "SUCCEEDED" else 1


async def _tail(client: Any, job_id: str) -> None:
    try:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except RuntimeError as err:
        # the stream closed early (head restarted, network); the status call below decides
        print(f"rbm-tune: log stream ended early ({err}); polling the job", file=sys.stderr)


def _status(value: Any) -> str:
    return str(getattr(value, "value", value))


def _wait_terminal(client: Any, job_id: str, poll: float = 2.0) -> str:
    while True:
        status = _status(client.get_job_status(job_id))
        if status in TERMINAL:
            return status
        time.sleep(poll)


def jobs(args: argparse.Namespace) -> int:
    """``rbm-tune jobs list|status|logs|stop``."""
    client = _client(args.address)
    if args.jobs_command == "list":
        rows = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
        print(f"{'job':<30} {'status':<10} {'study':<20} entrypoint")
        for job in rows:
            study = (job.metadata or {}).get("rbm_tune.study", "-")
            job_id = job.submission_id or job.job_id
            print(f"{job_id:<30} {_status(job.status):<10} {study:<20} {job.entrypoint[:60]}")
        return 0
    job_id = args.job_id
    try:
        info = client.get_job_info(job_id)
    except RuntimeError:
        raise RbmTuneError(
            f"no job {job_id!r} on {dashboard_address(args.address)}; list them with "
            "'rbm-tune jobs list'"
        ) from None
    if args.jobs_command == "status":
        study = (info.metadata or {}).get("rbm_tune.study", "-")
        note = f"  ({info.message})" if info.message else ""
        print(f"{job_id}  {_status(info.status)}  study {study}{note}")
        return 1 if _status(info.status) == "FAILED" else 0
    if args.jobs_command == "logs":
        if args.follow:
            return _follow(client, job_id)
        sys.stdout.write(client.get_job_logs(job_id))
        return 0
    if args.jobs_command == "stop":
        stopped = client.stop_job(job_id)
        print(f"job {job_id}: {'stop requested' if stopped else 'already ended'}")
        return 0
    raise ConfigError(f"unknown jobs action {args.jobs_command!r}")
