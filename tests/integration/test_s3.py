"""rbm_tune/store.py (the content store behind the teacher cache) and rbm_tune/storage.py (a
study folder's mirror of an object-store storage path) through a real S3 API: moto's
standalone server on 127.0.0.1, reached with ``s3://`` URIs (pyarrow's ``endpoint_override``
query, or ``AWS_ENDPOINT_URL``). Skipped when ``moto[server]`` is not installed (``.[dev]``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="moto[server] not installed (pip install -e '.[dev]')")


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on a free loopback port, with dummy credentials in the environment."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_content_store_round_trip_through_s3(s3_endpoint: str) -> None:
    import pyarrow.fs

    from rbm_tune.paths import cache_subdir
    from rbm_tune.store import ContentStore, content_digest

    query = f"?endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    fs, _ = pyarrow.fs.FileSystem.from_uri(f"s3://rbm-bucket{query}&allow_bucket_creation=true")
    fs.create_dir("rbm-bucket")
    root = cache_subdir(f"s3://rbm-bucket/cache{query}", "teachers")
    store = ContentStore(root, what="teacher cache", noun="teacher")
    assert not store.is_local
    digest = content_digest("a teacher")
    store.put_entry(digest, b"payload bytes", {"kind": "test"})
    names = [
        info.path
        for info in fs.get_file_info(pyarrow.fs.FileSelector("rbm-bucket", recursive=True))
    ]
    assert any(name.endswith(f"teachers/{digest}/meta.json") for name in names), names
    again = ContentStore(root, what="teacher cache", noun="teacher")
    entry = again.get_entry(digest, lambda e: e)
    assert entry is not None and entry.payload == b"payload bytes"
    assert entry.meta["kind"] == "test"


def test_study_folder_mirror_pull_and_push(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rbm_tune/storage.py: push copies the mirror's study files up and deletes a drained
    outbox there; pull brings down only rbm-tune's files that the mirror lacks (never Ray
    Tune's state); open_study drops the mirror of a study the bucket no longer holds."""
    import pyarrow.fs

    from rbm_tune.storage import open_study, pull, push, remote_study_files

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    fs, _ = pyarrow.fs.FileSystem.from_uri("s3://rbm-bucket")
    fs.create_dir("rbm-bucket")
    remote = "s3://rbm-bucket/runs"
    here = tmp_path / "mirror" / "st"
    (here / "plots").mkdir(parents=True)
    (here / "results.csv").write_text("trial_id\nA\n")
    (here / "mlflow-pending.json").write_text("[]")
    (here / "plots" / "p.png").write_bytes(b"png")
    push(here, remote, "st")
    with fs.open_output_stream("rbm-bucket/runs/st/experiment_state-x.json") as out:
        out.write(b"{}")  # Ray Tune's
    (here / "mlflow-pending.json").unlink()  # drained
    push(here, remote, "st")
    selector = pyarrow.fs.FileSelector("rbm-bucket/runs/st", recursive=True)
    names = sorted(i.path for i in fs.get_file_info(selector))
    assert names == [
        "rbm-bucket/runs/st/experiment_state-x.json",
        "rbm-bucket/runs/st/plots",
        "rbm-bucket/runs/st/plots/p.png",
        "rbm-bucket/runs/st/results.csv",
    ], names
    (state,) = remote_study_files(remote, "st", "experiment_state*.json")
    assert state == ("rbm-bucket/runs/st/experiment_state-x.json", b"{}")

    elsewhere = tmp_path / "other" / "st"
    elsewhere.mkdir(parents=True)
    (elsewhere / "results.csv").write_text("newer here\n")
    pull(remote, "st", elsewhere)
    assert (elsewhere / "results.csv").read_text() == "newer here\n"  # not overwritten
    assert (elsewhere / "plots" / "p.png").read_bytes() == b"png"
    assert not list(elsewhere.glob("experiment_state*"))
    assert open_study(remote, "st", elsewhere)
    stale = tmp_path / "other" / "stale"
    stale.mkdir()
    (stale / "results.csv").write_text("old\n")
    assert not open_study(remote, "stale", stale) and not stale.exists()


def test_best_of_a_study_the_bucket_lacks_names_the_uri(
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import pyarrow.fs

    from rbm_tune.cli import main

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("RBM_TUNE_CACHE", str(tmp_path / "cache"))
    pyarrow.fs.FileSystem.from_uri("s3://rbm-bucket")[0].create_dir("rbm-bucket")
    assert main(["best", "--name", "nosuch", "--storage-path", "s3://rbm-bucket/runs"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rbm-tune: error: no finished study 'nosuch' in s3://rbm-bucket/runs;")
    assert "\n" not in err
