"""A study whose storage path and teacher cache are both on an S3 API server (issue 21).

moto's standalone server (``python -m moto.server``, from ``.[dev]``) runs on a free loopback
port; the ``rbm-tune`` processes reach it through ``s3://`` URIs and ``AWS_ENDPOINT_URL``,
with dummy credentials, as a user would reach MinIO. Through the real CLI:

1. a study on ``--storage-path s3://rbm/runs --cache-dir s3://rbm/cache`` is SIGKILLed when its
   2nd trial completes (planted with ``RBM_TUNE_FAULT``), after it trained and cached the
   teacher in the bucket;
2. ``--resume`` from the bucket finishes it: every trial ended exactly once (results.csv in the
   bucket, MLflow), a trial finished before the kill kept its run (or, as after a local kill,
   its run was closed as KILLED saying why: Ray Tune's last snapshot predates it), every
   trial's results and each finished trial's checkpoint are objects in the bucket, and so are
   the summary files; a second ``--resume``, with the local mirror deleted, says the study is
   finished from what the bucket holds;
3. a second study (another name, same teacher key) takes the teacher from the bucket's cache:
   nothing trained, the cache's object count unchanged.

The same once more with the endpoint in the URIs' query instead of ``AWS_ENDPOINT_URL``. MLflow
stays local (SQLite in the test's folder). Skipped only when moto cannot start.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.support.processes import free_port, rbm_tune_cli, stop_process_group
from tests.support.study_checks import all_runs, check_lost_nothing, describe, write_study

pytestmark = pytest.mark.integration

BUCKET, TRIALS = "rbm", 3
STORAGE, CACHE = f"s3://{BUCKET}/runs", f"s3://{BUCKET}/cache"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 with bucket ``rbm``; the environment that reaches it (the
    processes the tests start get it on top of this one's, which loses any AWS endpoint,
    storage path or tracking URI of the caller's). The server (its own process group) is
    killed at teardown."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "RBM_TUNE_STORAGE",
                 "MLFLOW_TRACKING_URI"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    pytest.importorskip("moto.server", reason="moto[server] not installed (pip install .[dev])")
    boto3 = pytest.importorskip("boto3", reason="boto3 (a dependency of moto) not installed")
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.skip(f"moto's S3 server did not start: {_tail(tmp_path / 'moto.log')}")
                time.sleep(0.3)
        env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
        client = boto3.client("s3", endpoint_url=endpoint, **_boto_args())
        client.create_bucket(Bucket=BUCKET)
        yield env
    finally:
        stop_process_group(proc, wait=5)
        log.close()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-500:].strip() or "no output"


def _boto_args() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def _keys(env: dict[str, str], prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], **_boto_args())
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _object(env: dict[str, str], key: str) -> bytes:
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], **_boto_args())
    return bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _study(
    space: Path,
    cwd: Path,
    env: dict[str, str],
    *args: str,
    storage: str = STORAGE,
    cache: str = CACHE,
    **extra: str,
) -> Any:
    """``rbm-tune --space SPACE`` on the bucket; (exit status, output)."""
    full = {**env, "RBM_TUNE_CACHE": str(cwd / "local-cache"), **extra}
    proc = rbm_tune_cli(
        "--space", str(space), "--cpus", "2", "--storage-path", storage, "--cache-dir", cache,
        *args, cwd=cwd, env=full,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=500)
    finally:  # a killed driver leaves its local Ray behind
        stop_process_group(proc, wait=5)
    return proc.returncode, out


def _cli(cwd: Path, env: dict[str, str], *args: str) -> str:
    """``rbm-tune ARGS`` (not a study): its stdout; fails the test unless it exits 0."""
    full = {**os.environ, **env, "RBM_TUNE_CACHE": str(cwd / "local-cache")}
    done = subprocess.run(
        [sys.executable, "-m", "rbm_tune", *args],
        cwd=cwd, env=full, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_study_resume_and_teacher_cache_on_s3(tmp_path: Path, s3_server: dict[str, str]) -> None:
    env, name = s3_server, "s3study"
    space = write_study(tmp_path, name, trials=TRIALS, epochs=5, concurrent=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    # 1. killed when its 2nd trial completes; the teacher it trained is in the bucket's cache
    fault = {"RBM_TUNE_FAULT": "driver_complete@2=kill", "RBM_TUNE_FAULT_DIR": str(tmp_path)}
    code, out = _study(space, tmp_path, env, **fault)
    assert code == -signal.SIGKILL, f"the planted kill did not happen:\n{out[-4000:]}"
    assert "(trained)" in out, out[-4000:]
    teacher_keys = _keys(env, "cache/teachers/")
    assert any(k.endswith("/payload.pt") for k in teacher_keys), teacher_keys
    assert _keys(env, f"runs/{name}/"), "Ray Tune wrote nothing to the bucket"
    before = {
        r.data.tags["rbm_tune.trial_id"]: r.info.run_id
        for r in all_runs(uri, name)
        if r.data.tags.get("rbm_tune.role") == "trial" and r.info.status == "FINISHED"
    }
    assert len(before) >= 2, describe(all_runs(uri, name))

    # 2. --resume from the bucket finishes it; no finished trial lost or run again
    code, out = _study(space, tmp_path, env, "--resume")
    assert code == 0, out[-4000:]
    assert "(from cache)" in out, out[-4000:]
    keys = _keys(env, f"runs/{name}/")
    for file in ("best_config.yaml", "results.csv", "trials.json", "finished.json"):
        assert f"runs/{name}/{file}" in keys, keys
    assert not [k for k in keys if k.endswith("mlflow-pending.json")], keys  # drained
    copy = tmp_path / "from-bucket"
    (copy / name).mkdir(parents=True)
    (copy / name / "results.csv").write_bytes(_object(env, f"runs/{name}/results.csv"))
    finished = check_lost_nothing(uri, name, copy, trials=TRIALS)
    client = MlflowClient(uri)
    for trial_id, run_id in before.items():
        # as after a local driver's SIGKILL (tests/reliability/test_driver_faults.py): a trial
        # that finished keeps its run, unless Ray Tune's last snapshot in the bucket still had
        # it running (then it ran again from its checkpoint) or did not hold it yet (another
        # trial ran in its place); its old run is then closed as KILLED, saying why
        if trial_id in finished and finished[trial_id].info.run_id == run_id:
            continue
        old = client.get_run(run_id)
        assert old.info.status == "KILLED", describe(all_runs(uri, name))
        why = old.data.tags["rbm_tune.ended_by"]
        if trial_id in finished:
            assert why.startswith("restarted"), why
        else:
            assert why.startswith("finished after Ray Tune's last snapshot"), why
    rows = list(csv.DictReader(io.StringIO(_object(env, f"runs/{name}/results.csv").decode())))
    for row in rows:  # each trial's results and (finished trials') checkpoint in the bucket
        folder = [k for k in keys if f"_{row['trial_id']}_" in k]
        assert any(k.endswith("/result.json") for k in folder), (row, keys)
        if row["asha_stopped"] == "False":
            assert any("/checkpoint_" in k and k.endswith("student.pt") for k in folder), row
    (parent,) = [r for r in all_runs(uri, name) if r.data.tags.get("rbm_tune.role") == "study"]
    assert parent.info.status == "FINISHED"
    assert "best_config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    # ...and a second --resume sees the study finished, from the bucket alone
    mirror = tmp_path / "local-cache" / "storage"
    assert mirror.is_dir()
    shutil.rmtree(mirror)
    code, out = _study(space, tmp_path, env, "--resume")
    assert code == 0 and "already finished" in out, out[-3000:]

    # best and export read the study from the bucket alone (the mirror deleted again); the
    # best trial's checkpoint is an s3:// URI in trials.json, downloaded to export it
    trials = json.loads(_object(env, f"runs/{name}/trials.json"))
    assert all(t["checkpoint"].startswith(f"s3://{BUCKET}/runs/{name}/") for t in trials
               if not t["asha_stopped"]), trials  # fmt: skip
    shutil.rmtree(mirror)
    best = _cli(tmp_path, env, "best", "--name", name, "--storage-path", STORAGE)
    chosen, config = best.split("\n", 1)  # best's provenance line, then the config
    assert chosen.startswith("# chosen by: search"), best
    assert config == _object(env, f"runs/{name}/best_config.yaml").decode()
    out = _cli(tmp_path, env, "export", "--name", name, "--storage-path", STORAGE, "--out",
               str(tmp_path / "student.pt"))  # fmt: skip
    assert (tmp_path / "student.pt").is_file() and "exported trial" in out, out

    # 3. another study, the same teacher key: the teacher comes from the bucket's cache
    code, out = _study(space, tmp_path, env, "--name", "s3again", "--trials", "1")
    assert code == 0, out[-4000:]
    assert "(from cache)" in out and "(trained)" not in out, out[-4000:]
    assert _keys(env, "cache/teachers/") == teacher_keys
    assert "runs/s3again/results.csv" in _keys(env, "runs/s3again/")


def test_endpoint_in_the_uri_query(tmp_path: Path, s3_server: dict[str, str]) -> None:
    """The other way to name the server: pyarrow's ``?endpoint_override=HOST:PORT&scheme=http``
    on both URIs, no ``AWS_ENDPOINT_URL``: a study trains and caches its teacher, writes its
    trials and summary to the bucket, and ``export`` reads its checkpoint back."""
    env = {k: v for k, v in s3_server.items() if k != "AWS_ENDPOINT_URL"}
    host = s3_server["AWS_ENDPOINT_URL"].removeprefix("http://")
    query = f"?endpoint_override={host}&scheme=http"
    storage, cache = f"s3://{BUCKET}/q-runs{query}", f"s3://{BUCKET}/q-cache{query}"
    space = write_study(tmp_path, "query", trials=2, epochs=4, concurrent=2)
    code, out = _study(space, tmp_path, env, storage=storage, cache=cache)
    assert code == 0, out[-4000:]
    assert "(trained)" in out, out[-4000:]
    assert any(k.endswith("/payload.pt") for k in _keys(s3_server, "q-cache/teachers/"))
    keys = _keys(s3_server, "q-runs/query/")
    assert "q-runs/query/finished.json" in keys and any("/checkpoint_" in k for k in keys), keys
    out = _cli(tmp_path, env, "export", "--name", "query", "--storage-path", storage, "--out",
               str(tmp_path / "student.pt"))  # fmt: skip
    assert (tmp_path / "student.pt").is_file() and "exported trial" in out, out

    # evaluate --select on the bucket: its table and the selected best config go back there,
    # and best reads them from the bucket alone (the mirror deleted)
    _cli(tmp_path, env, "evaluate", "--name", "query", "--storage-path", storage, "--cache-dir",
         cache, "--top", "2", "--seeds", "1", "--select", "mean-val", "--cpus", "2")  # fmt: skip
    keys = _keys(s3_server, "q-runs/query/")
    assert "q-runs/query/best_selection.json" in keys, keys
    assert any(k.startswith("q-runs/query/evaluate-top2-seeds1") for k in keys), keys
    shutil.rmtree(tmp_path / "local-cache" / "storage")
    best = _cli(tmp_path, env, "best", "--name", "query", "--storage-path", storage)
    assert "chosen by: mean val acc" in best.splitlines()[0], best
