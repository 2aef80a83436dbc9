"""The storage check's markers: written here through pyarrow.fs, read back, missing elsewhere."""

from __future__ import annotations

from pathlib import Path

from rbm_tune.study.storage_check import read_marker, write_marker


def test_marker_round_trip_and_missing_folder(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "runs"
    path = write_marker(shared, "abc123")
    assert Path(path).read_text() == "abc123"
    assert read_marker(shared, "abc123")
    assert not read_marker(shared, "other")
    assert not read_marker(tmp_path / "not-mounted", "abc123")


def test_marker_through_file_uri(tmp_path: Path) -> None:
    write_marker(f"file://{tmp_path}", "tok")
    assert read_marker(tmp_path, "tok")
