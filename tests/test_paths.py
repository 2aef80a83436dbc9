"""URI handling of --storage-path and --cache-dir (rbm_tune/paths.py): a scheme pyarrow does
not know, or an object store that does not answer, is a one-line error with exit 2; an object
store's study folders have a local mirror (rbm_tune/storage.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbm_tune.cli import main
from rbm_tune.errors import ConfigError
from rbm_tune.paths import cache_subdir, check_uri, resolve_storage


def test_check_uri_accepts_directories_and_pyarrow_schemes() -> None:
    for text in ("/tmp/x", "relative/dir", "file:///tmp/x", "s3://b/p?region=x", "gs://b/p"):
        assert check_uri(text, "--cache-dir") == text


def test_check_uri_refuses_an_unknown_scheme() -> None:
    with pytest.raises(ConfigError, match=r"--cache-dir 'ftp://h/p': unknown URI scheme 'ftp'"):
        check_uri("ftp://h/p", "--cache-dir")


def test_cache_subdir_refuses_an_unknown_scheme_and_keeps_a_query() -> None:
    with pytest.raises(ConfigError, match="unknown URI scheme 'sftp'"):
        cache_subdir("sftp://h/p", "teachers")
    assert cache_subdir("s3://b/p?region=x", "teachers") == "s3://b/p/teachers?region=x"


def test_resolve_storage_file_uri_is_its_path(tmp_path: Path) -> None:
    assert resolve_storage(f"file://{tmp_path}/runs") == tmp_path / "runs"


def test_an_object_store_storage_is_a_local_mirror_not_a_folder_named_s3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rbm_tune.storage import mirror_dir, remote_storage, study_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RBM_TUNE_CACHE", str(tmp_path / "cache"))
    mirror = resolve_storage("s3://bucket/runs")
    assert mirror == mirror_dir("s3://bucket/runs")
    assert mirror.parent == tmp_path / "cache" / "storage"
    assert mirror.name.startswith("bucket_runs-")
    assert mirror != mirror_dir("s3://bucket/runs?region=eu-west-1")
    assert not (tmp_path / "s3:").exists()
    assert remote_storage("s3://bucket/runs") == "s3://bucket/runs"
    assert remote_storage(f"file://{tmp_path}") is None and remote_storage(tmp_path) is None
    assert study_uri("s3://b/runs/?region=x", "st") == "s3://b/runs/st?region=x"


@pytest.mark.parametrize("uri", ["s3://bucket/runs", "ftp://h/runs"])
def test_best_with_a_uri_storage_is_one_line_exit_2(
    uri: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # an S3 endpoint on a loopback port nobody listens on (never the real AWS)
    from tests.support.processes import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["best", "--name", "demo", "--storage-path", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rbm-tune: error: --storage-path")
    assert "\n" not in err and "Traceback" not in err
    if uri.startswith("s3"):
        assert "cannot read it" in err and "AWS_ENDPOINT_URL" in err, err
