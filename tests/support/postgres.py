"""A private PostgreSQL cluster for tests: a temp folder, 127.0.0.1, a free port, one database.

``initdb`` refuses root, so as root the cluster runs as ``nobody`` (``runuser``). Where the
binaries are missing or cannot run, :func:`postgres_cluster` skips the test with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port, stop_process_group

_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _binary(name: str) -> str | None:
    for folder in _BIN_DIRS:
        if (folder / name).is_file():
            return str(folder / name)
    return shutil.which(name)


def _as_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("PostgreSQL: running as root and no runuser to drop to an unprivileged user")
    return [runuser, "-u", "nobody", "--", *cmd]


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(_as_user(cmd), capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        pytest.skip(f"PostgreSQL: {what} failed ({res.returncode}): {res.stderr.strip()[-300:]}")


@contextlib.contextmanager
def postgres_cluster(db: str = "mlflow") -> Iterator[str]:
    """A running cluster on 127.0.0.1 with database ``db``; yields its SQLAlchemy URI."""
    initdb, pg_ctl, createdb = (_binary(n) for n in ("initdb", "pg_ctl", "createdb"))
    if initdb is None or pg_ctl is None or createdb is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl, createdb) not installed")
    root = Path(tempfile.mkdtemp(prefix="rbm-tune-test-pg-"))
    root.chmod(0o755)
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("nobody")
        for p in (root, sock):
            os.chown(p, user.pw_uid, user.pw_gid)
    port = free_port()
    try:
        _run([initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"], "initdb")
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock}"
        _run(
            [pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"],
            "pg_ctl start",
        )
        try:
            _run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", db], "createdb")
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{db}"
        finally:
            subprocess.run(
                _as_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server_over(db_uri: str, artifacts: Path, timeout: float = 120) -> Iterator[str]:
    """``mlflow server`` over ``db_uri`` with served artifacts under ``artifacts``, on
    127.0.0.1 and a free port; yields its http URI and stops it (and its workers) after."""
    artifacts.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = artifacts.parent / "mlflow-server.log"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db_uri,
         "--serve-artifacts", "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                tail = log.read_text()[-1500:]
                raise RuntimeError(
                    f"mlflow server exited ({proc.returncode}) before it answered: {tail}"
                )
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.read().decode().strip() == "OK":
                        break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not become healthy in {timeout:.0f} s"
                    ) from None
                time.sleep(0.5)
        yield uri
    finally:
        stop_process_group(proc)
