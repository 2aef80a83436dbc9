"""The content store under the teacher and DeepWalk caches: its contract, the teacher cache's
on-disk format (caches written before the store existed must still hit), cache-dir paths."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import pytest
import torch

from rbm_tune.errors import CacheError
from rbm_tune.paths import cache_subdir, local_cache_dir
from rbm_tune.store import ContentStore, CorruptEntry, Entry, content_digest
from rbm_tune.teacher_cache import TeacherCache, TeacherKey

TEACHER = {"model": "sage", "num_layers": 2, "hidden_dim": 8, "max_epochs": 5, "patience": 5}
KEY = TeacherKey("tiny", "transductive", "f" * 64, TEACHER, 0)
# KEY's digest as the teacher cache computed it before the store (commit 882a7dc): a changed
# digest would make every user's cached teacher miss.
KEY_DIGEST = "2d6966e205e0418301c449e87871b02e76a2cab80021f8510f287161a95b8b93"
# meta.json's fields as the teacher cache wrote them before the store (commit 882a7dc)
META_FIELDS = {
    "format",
    "digest",
    "key",
    "val_acc",
    "test_acc",
    "test_acc_oracle",
    "best_epoch",
    "epochs",
    "seconds",
    "payload_bytes",
    "payload_sha256",
    "created",
    "created_unix",
    "code_version",
    "torch_version",
    "host",
}


def _old_entry(root: Path) -> dict[str, torch.Tensor]:
    """Write KEY's entry the way the pre-store teacher cache did, byte for byte in layout:
    ``<root>/<digest>/payload.pt`` (torch.save of a plain dict) and ``meta.json``."""
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "log_probs": torch.randn(6, 3, generator=gen).log_softmax(-1),
        "embedding": torch.randn(6, 4, generator=gen),
        "krd_delta": torch.rand(6, generator=gen),
    }
    scalars = {
        "val_acc": 0.5,
        "test_acc": 0.25,
        "test_acc_oracle": 0.5,
        "best_epoch": 3,
        "epochs": 5,
        "seconds": 0.01,
    }
    record = {
        "format": 1,
        "digest": KEY_DIGEST,
        **tensors,
        "state_dict": {"w": torch.ones(4, 3)},
        "scalars": scalars,
    }
    buffer = io.BytesIO()
    torch.save(record, buffer)
    payload = buffer.getvalue()
    meta = {
        "format": 1,
        "digest": KEY_DIGEST,
        "key": KEY.fields(),
        **scalars,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "created": "2026-12-01T00:00:00+00:00",
        "created_unix": 1795996800.0,
        "code_version": 1,
        "torch_version": torch.__version__,
        "host": "old-host",
    }
    entry = root / KEY_DIGEST
    entry.mkdir(parents=True)
    (entry / "payload.pt").write_bytes(payload)
    (entry / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return tensors


def test_a_teacher_cached_before_the_store_still_hits(tmp_path: Path) -> None:
    assert KEY.digest == KEY_DIGEST
    tensors = _old_entry(tmp_path)
    cache = TeacherCache(tmp_path)
    assert cache.entry_path(KEY) == f"{tmp_path}/{KEY_DIGEST}"
    lines: list[str] = []
    got = cache.get_or_train(
        KEY, lambda: pytest.fail("a cached teacher must not train"), log=lines.append
    )
    assert lines == [f"teacher: loaded from cache {KEY_DIGEST[:12]}"]
    assert all(torch.equal(getattr(got, k), v) for k, v in tensors.items())
    assert got.state_dict is not None and torch.equal(got.state_dict["w"], torch.ones(4, 3))
    assert (got.val_acc, got.best_epoch) == (0.5, 3)
    (info,) = cache.entries()
    assert (info.digest, info.key, info.created) == (KEY_DIGEST, KEY.fields(), 1795996800.0)


def test_the_teacher_cache_writes_the_old_layout(tmp_path: Path) -> None:
    """What the store-based cache writes, an older rbm-tune reads: same folder, files, fields."""
    _old_entry(tmp_path / "old")
    old = TeacherCache(tmp_path / "old").get(KEY)
    assert old is not None
    TeacherCache(tmp_path / "new").put(KEY, old)
    entry = tmp_path / "new" / KEY_DIGEST
    assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "payload.pt"]
    meta = json.loads((entry / "meta.json").read_text())
    assert set(meta) == META_FIELDS
    assert meta["digest"] == KEY_DIGEST and meta["key"] == KEY.fields()
    payload = (entry / "payload.pt").read_bytes()
    assert meta["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    record = torch.load(io.BytesIO(payload), weights_only=True)
    assert set(record) == {"format", "digest", "log_probs", "embedding", "krd_delta",
                           "state_dict", "scalars"}  # fmt: skip


def _decode(entry: Entry) -> bytes:
    if entry.payload.startswith(b"bad"):
        raise CorruptEntry("payload.pt says bad")
    return entry.payload


def _encode(value: bytes) -> tuple[bytes, dict[str, object]]:
    return value, {"note": "test"}


def test_get_or_create_makes_once_and_reads_back(tmp_path: Path) -> None:
    store, calls = ContentStore(tmp_path), []
    digest = content_digest("k")

    def create() -> bytes:
        calls.append(1)
        return b"value"

    for expected_created in (True, False):
        value, created = store.get_or_create(digest, decode=_decode, create=create, encode=_encode)
        assert (value, created) == (b"value", expected_created)
    assert len(calls) == 1
    ((found, path, meta, size),) = store.scan()
    files = sum(p.stat().st_size for p in (tmp_path / digest).iterdir())
    assert (found, path, size) == (digest, f"{tmp_path}/{digest}", files)
    assert meta["note"] == "test" and meta["payload_bytes"] == 5
    assert store.clear() == 1 and list(store.scan()) == []


def test_a_payload_decode_rejects_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ContentStore(tmp_path, what="test cache", noun="thing")
    digest = content_digest("k")
    store.put_entry(digest, b"bad payload", {})
    with caplog.at_level(logging.WARNING):
        value, created = store.get_or_create(
            digest, decode=_decode, create=lambda: b"good", encode=_encode
        )
    assert (value, created) == (b"good", True)
    (record,) = caplog.records
    (aside,) = tmp_path.glob(f"{digest}.corrupt-*")
    assert record.getMessage() == (
        f"rbm-tune: warning: test cache entry {tmp_path / digest} is corrupt (payload.pt says "
        f"bad); moved aside to {aside} and recomputing"
    )
    assert store.get_entry(digest, _decode) == b"good"


def test_unwritable_store_warns_or_raises_when_required(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    store = ContentStore(tmp_path / "file" / "store", what="test cache", noun="thing")
    with pytest.raises(CacheError, match="cannot write the test cache"):
        store.check_writable()
    with caplog.at_level(logging.WARNING):
        value, created = store.get_or_create(
            "0" * 64, decode=_decode, create=lambda: b"v", encode=_encode
        )
    assert (value, created) == (b"v", True)
    (record,) = caplog.records
    assert record.getMessage().startswith("rbm-tune: warning: could not store thing 000000000000")
    with pytest.raises(CacheError, match="cannot write test cache entry"):
        store.get_or_create("0" * 64, decode=_decode, create=lambda: b"v", encode=_encode,
                            require=True)  # fmt: skip


def test_cache_dir_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBM_TUNE_CACHE", str(tmp_path / "env"))
    assert cache_subdir(None, "deepwalk") == tmp_path / "env" / "deepwalk"
    assert cache_subdir(tmp_path / "c", "teachers") == tmp_path / "c" / "teachers"
    assert cache_subdir("s3://b/p/?region=x", "deepwalk") == "s3://b/p/deepwalk?region=x"
    assert local_cache_dir(None) == tmp_path / "env"
    assert local_cache_dir(tmp_path / "c") == tmp_path / "c"
    assert local_cache_dir((tmp_path / "c").as_uri()) == tmp_path / "c"
    assert local_cache_dir("s3://bucket/rbm") == tmp_path / "env"  # PyG writes local files only
