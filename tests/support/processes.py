"""Processes the tests start: free loopback ports, ``mlflow server``, ``rbm-tune`` itself."""

from __future__ import annotations

import atexit
import functools
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free port on 127.0.0.1 that no other process is likely to take before the caller binds.

    A port the OS hands out for ``bind(0)`` (its ephemeral range, 32768-60999 here) is free for
    anyone between this check and the caller's bind, seconds later for an MLflow server, and the
    OS may give it to the next process that asks: in a clean-clone CI run a Ray process of the
    other xdist worker took one, and the test's health check read that gRPC server's HTTP/2
    reply (``BadStatusLine``). So: a random port above Ray's worker ports (10002-19999 by
    default) and below the ephemeral range, never the same twice in one process.
    """
    rng = random.SystemRandom()
    high = max(_ephemeral_low(), 20001)
    while True:
        port = rng.randrange(20000, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


@functools.cache
def migrated_mlflow_db() -> Path:
    """An empty MLflow SQLite store at the newest schema, made once per process.

    ``mlflow server`` on a new SQLite file runs MLflow's 68 schema migrations before it
    answers: 35 s instead of 15 s to a healthy server on 2 cores. A copy of this store is the
    same empty store, already migrated (MLflow's own SqlAlchemyStore made it).
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="rbm-tune-test-mlflow-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    db = folder / "db.sqlite"
    SqlAlchemyStore(f"sqlite:///{db}", str(folder / "artifacts")).engine.dispose()
    return db


def start_mlflow_server(root: Path, port: int, timeout: float = 90) -> tuple[Any, str]:
    """A real ``mlflow server`` on 127.0.0.1:``port`` over ``root``/db.sqlite, once healthy.

    A new ``root`` starts from a copy of :func:`migrated_mlflow_db`. Returns the process (its
    own process group) and the tracking URI. The same ``root`` and ``port`` bring back the same
    server after :func:`stop_process_group`.
    """
    if not (root / "db.sqlite").exists():
        shutil.copyfile(migrated_mlflow_db(), root / "db.sqlite")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'db.sqlite'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:  # e.g. another process holds the port
            raise RuntimeError(f"mlflow server exited ({proc.returncode}) before it answered")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                if resp.read().decode().strip() == "OK":
                    return proc, uri
        except (OSError, http.client.HTTPException):  # not listening yet / not HTTP
            time.sleep(0.5)
    stop_process_group(proc)
    raise RuntimeError(f"mlflow server did not become healthy in {timeout:.0f} s")


def stop_process_group(proc: Any, sig: int = signal.SIGTERM, wait: float = 20) -> None:
    """Signal a process started with ``start_new_session=True`` and all it left behind."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=wait)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def rbm_tune_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()
) -> Any:
    """``rbm-tune ARGS`` as a real process in its own process group (stdout+stderr merged).

    Single-node Ray on 127.0.0.1 (STACK.md "Loopback only"), no token files, no usage stats;
    ``env`` overrides, ``unset`` names variables the process must not have (e.g.
    ``RAY_AUTH_MODE``: Ray's default, token auth, as a user's shell has it).
    """
    full_env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        **(env or {}),
    }
    for name in unset:
        full_env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "rbm_tune", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
