"""The content store behind the teacher cache (rbm_tune/store.py) through a real S3 API: moto's
standalone server on 127.0.0.1, reached with an ``s3://`` URI and pyarrow's
``endpoint_override`` query. Skipped when ``moto[server]`` is not installed (``.[dev]``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

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
