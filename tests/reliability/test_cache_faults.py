"""Storage faults of the caches: a read-only or full teacher cache, a damaged or wrong teacher
entry, a damaged processed dataset copy. Each ends in automatic recovery or one clear error,
never in a wrong teacher or a half-written entry.

Decided behaviour (rbm_tune/teacher_cache.py, "Storage faults"):

- ``rbm-tune train`` (and a study) on a cache it cannot write trains the teacher, prints one
  ``rbm-tune: warning: could not store teacher ...`` line naming the OS's reason and the fix,
  and succeeds with the same numbers as a run on a healthy cache;
- ``rbm-tune teacher``, whose only job is to fill the cache, fails instead: exit 2, one line;
- a damaged entry, or another teacher's files under this key, is detected (size, sha256, key
  inside ``meta.json`` and inside the payload), moved aside with one warning and retrained to
  the same numbers.

Root ignores file modes, so read-only and full folders are real mounts: a read-only tmpfs and a
16 KiB tmpfs (a teacher payload is ~250 KB). Without root, or where mounting is not allowed,
those tests skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

RBM_TUNE = Path(sys.executable).parent / "rbm-tune"
TINY = """\
dataset: demo
teacher: {model: sage, num_layers: 2, hidden_dim: 16, max_epochs: 15, patience: 10}
student: {model: rbm, hidden_dim: 16, num_experts: 3, k: 2}
distill: {max_epochs: 6, pretrain_epochs: 2}
"""
WARNING = "rbm-tune: warning: "
SAME = ("teacher_val_acc", "teacher_test_acc", "val_acc", "test_acc", "best_epoch")


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RBM_TUNE_", "MLFLOW_")) and k != "PYTEST_CURRENT_TEST"
    }
    env.update(RBM_TUNE_CACHE=str(cwd / "scratch-cache"), PYTHONWARNINGS="ignore")
    return subprocess.run(
        [str(RBM_TUNE), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def warnings_of(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith(WARNING)]


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbm-tune: error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def no_partial_entries(teachers: Path) -> list[str]:
    """What a failed write left in a teacher root: anything but the empty lock folder."""
    if not teachers.exists():
        return []
    left = [p.name for p in teachers.iterdir() if p.name != ".locks"]
    locks = teachers / ".locks"
    return left + ([p.name for p in locks.iterdir()] if locks.is_dir() else [])


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cache-faults")
    (folder / "tiny.yaml").write_text(TINY)
    return folder


@pytest.fixture(scope="module")
def reference(work: Path) -> tuple[dict, Path]:
    """A clean run on a healthy cache: its metrics, and the cache holding its teacher."""
    cache = work / "healthy"
    out = work / "reference.json"
    proc = cli("train", "--config", "tiny.yaml", "--cache-dir", cache, "--json", out, cwd=work)
    assert_ok(proc)
    assert warnings_of(proc) == []
    return json.loads(out.read_text()), cache


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at ``path`` for the block; always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs (file modes do not stop root)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        why = f"cannot mount a tmpfs here: {done.stderr.strip()}"
        if os.environ.get("CI"):  # CI runs as root with mount rights: never skip there
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def train_json(work: Path, cache: Path, name: str, *extra: str) -> tuple[dict, list[str]]:
    out = work / f"{name}.json"
    proc = cli(
        "train", "--config", "tiny.yaml", "--cache-dir", cache, "--json", out, *extra, cwd=work
    )
    assert_ok(proc)
    return json.loads(out.read_text()), proc.stderr.splitlines()


def same_numbers(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in SAME)


def test_read_only_cache_dir(work: Path, reference: tuple[dict, Path]) -> None:
    ref, healthy = reference
    (entry,) = (healthy / "teachers").glob("[0-9a-f]" * 64)
    mount = work / "read-only"
    with tmpfs(mount, "size=4m"):
        remount(mount, "ro")
        # empty and read-only: trained, used, not stored; one warning with the reason and fix
        metrics, stderr = train_json(work, mount, "ro-empty", "--quiet")
        assert same_numbers(metrics, ref)
        (warning,) = stderr
        assert warning.startswith(f"{WARNING}could not store teacher {entry.name[:12]}")
        assert "Read-only file system" in warning and "--cache-dir" in warning

        # 'rbm-tune teacher' exists to fill the cache: there it is an error, before training
        proc = cli("teacher", "--config", "tiny.yaml", "--cache-dir", mount, cwd=work)
        assert_one_line_error(proc, "cannot write the teacher cache", "Read-only file system")
        assert proc.stdout == ""

        # a shared cache filled elsewhere and mounted read-only: loaded, no warning
        remount(mount, "rw")
        shutil.copytree(entry, mount / "teachers" / entry.name)
        remount(mount, "ro")
        metrics, stderr = train_json(work, mount, "ro-hit")
        assert same_numbers(metrics, ref)
        assert f"teacher: loaded from cache {entry.name[:12]}" in stderr
        assert not [line for line in stderr if line.startswith(WARNING)]

        # a damaged entry there cannot be moved aside: reported, never used, retrained
        remount(mount, "rw")
        payload = mount / "teachers" / entry.name / "payload.pt"
        payload.write_bytes(payload.read_bytes()[:1000])
        remount(mount, "ro")
        metrics, stderr = train_json(work, mount, "ro-corrupt", "--quiet")
        assert same_numbers(metrics, ref)
        corrupt, unstored = stderr
        assert "is corrupt (payload.pt is truncated: 1000 of" in corrupt
        assert "could not be moved aside (Read-only file system); not using it" in corrupt
        assert unstored.startswith(f"{WARNING}could not store teacher")


def test_full_cache_dir(work: Path, reference: tuple[dict, Path]) -> None:
    ref, _ = reference
    mount = work / "full"
    with tmpfs(mount, "size=16k"):
        metrics, stderr = train_json(work, mount, "full", "--quiet")
        assert same_numbers(metrics, ref)
        (warning,) = stderr
        assert warning.startswith(f"{WARNING}could not store teacher")
        assert "No space left on device" in warning and "free some space" in warning
        assert no_partial_entries(mount / "teachers") == []  # no half-written entry, no lock

        proc = cli("teacher", "--config", "tiny.yaml", "--quiet", "--cache-dir", mount, cwd=work)
        assert_one_line_error(proc, "cannot write teacher cache entry", "No space left on device")
        assert no_partial_entries(mount / "teachers") == []


# -- damaged or wrong teacher entries, through 'rbm-tune teacher' -------------------------------


@pytest.fixture(scope="module")
def two_teachers(work: Path) -> tuple[Path, dict[int, dict]]:
    """A cache holding the tiny config's teachers for seeds 0 and 1, and their meta.json."""
    cache = work / "two-teachers"
    proc = cli(
        "teacher",
        "--config",
        "tiny.yaml",
        "--seeds",
        "2",
        "--quiet",
        "--cache-dir",
        cache,
        cwd=work,
    )
    assert_ok(proc)
    metas = {}
    for entry in (cache / "teachers").glob("[0-9a-f]" * 64):
        meta = json.loads((entry / "meta.json").read_text())
        metas[meta["key"]["seed"]] = meta
    assert sorted(metas) == [0, 1]
    assert (metas[0]["val_acc"], metas[0]["test_acc"]) != (
        metas[1]["val_acc"],
        metas[1]["test_acc"],
    )
    return cache, metas


def _truncate(entry: Path, other: Path) -> None:
    payload = entry / "payload.pt"
    payload.write_bytes(payload.read_bytes()[:-4096])


def _other_payload(entry: Path, other: Path) -> None:
    shutil.copyfile(other / "payload.pt", entry / "payload.pt")


def _other_entry(entry: Path, other: Path) -> None:
    for name in ("payload.pt", "meta.json"):
        shutil.copyfile(other / name, entry / name)


def _other_payload_with_forged_checksum(entry: Path, other: Path) -> None:
    """Another teacher's payload, with this entry's meta.json rewritten to match its bytes:
    only the key stored inside the payload can tell."""
    meta = json.loads((entry / "meta.json").read_text())
    theirs = json.loads((other / "meta.json").read_text())
    meta["payload_sha256"], meta["payload_bytes"] = (
        theirs["payload_sha256"],
        theirs["payload_bytes"],
    )
    shutil.copyfile(other / "payload.pt", entry / "payload.pt")
    (entry / "meta.json").write_text(json.dumps(meta))


DAMAGE = {
    "truncated-payload": (_truncate, "payload.pt is truncated"),
    "another-teachers-payload": (_other_payload, "payload.pt fails its sha256 checksum"),
    "another-teachers-entry": (_other_entry, "meta.json belongs to another key"),
    "forged-checksum": (_other_payload_with_forged_checksum, "payload.pt does not match its key"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_or_wrong_entry_is_moved_aside_and_retrained(
    damage: str, work: Path, two_teachers: tuple[Path, dict[int, dict]]
) -> None:
    source, metas = two_teachers
    cache = work / f"damaged-{damage}"
    shutil.copytree(source, cache)
    entries = {metas[s]["digest"]: cache / "teachers" / metas[s]["digest"] for s in (0, 1)}
    mine, other = entries[metas[0]["digest"]], entries[metas[1]["digest"]]
    harm, reason = DAMAGE[damage]
    harm(mine, other)
    damaged = {p.name: p.read_bytes() for p in mine.iterdir()}

    proc = cli("teacher", "--config", "tiny.yaml", "--quiet", "--cache-dir", cache, cwd=work)
    assert_ok(proc)
    (warning,) = warnings_of(proc)
    assert warning.startswith(f"{WARNING}teacher cache entry {mine} is corrupt ({reason}")
    assert warning.endswith("and retraining")
    (aside,) = (cache / "teachers").glob(f"{mine.name}.corrupt-*")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == damaged  # kept, never used
    # retrained: the seed-0 teacher again, to the same numbers, never seed 1's
    (row,) = proc.stdout.splitlines()[:1]
    assert row.startswith(f"{mine.name[:12]}  trained ")
    meta = json.loads((mine / "meta.json").read_text())
    assert meta["key"]["seed"] == 0
    assert (meta["val_acc"], meta["test_acc"]) == (metas[0]["val_acc"], metas[0]["test_acc"])
    assert f"val_acc {metas[0]['val_acc']:.4f}  test_acc {metas[0]['test_acc']:.4f}" in row
    # and the entry now reads back clean (the next run loads it without a word)
    from rbm_tune.teacher_cache import TeacherCache, TeacherKey

    loaded = TeacherCache(cache / "teachers").get(TeacherKey.from_fields(meta["key"]))
    assert loaded is not None and (loaded.val_acc, loaded.test_acc) == (
        metas[0]["val_acc"],
        metas[0]["test_acc"],
    )


# -- the processed copy of a dataset in the cache --------------------------------------------


def test_truncated_processed_dataset_copy_is_rebuilt(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash while PyG wrote its processed file leaves it short: rebuilt from raw, once."""
    import logging

    from rbm_tune.data import load_graph

    cache = tmp_path / "cache"
    first = load_graph("cora", root=shared_data, cache_dir=cache)
    (processed,) = cache.glob("processed/Cora-*/Cora/processed/data.pt")
    processed.write_bytes(processed.read_bytes()[:5000])
    with caplog.at_level(logging.WARNING, logger="rbm_tune.data.sources"):
        again = load_graph("cora", root=shared_data, cache_dir=cache)
    (record,) = caplog.records
    assert (
        "processed copy of cora" in record.getMessage() and "rebuilding it" in record.getMessage()
    )
    assert again.fingerprint == first.fingerprint
    caplog.clear()
    load_graph("cora", root=shared_data, cache_dir=cache)
    assert not caplog.records  # rebuilt for good
