"""Teacher cache: train each teacher once, reuse it in every trial, study and node (spec §10.2).

**Key.** :class:`TeacherKey` covers everything that changes a teacher's outputs (spec §7.5): the
dataset and setting, the graph's fingerprint (features, edges, labels, split), every field of the
``TeacherSpec``, the training seed and :data:`TEACHER_CODE_VERSION` (bump it when ``teacher.py``
or ``models/teachers.py`` change what they compute). The device is not in the key.

**Layout.** ``<root>/<digest>/`` holds ``payload.pt`` (``torch.save`` of plain tensors: log-probs,
hidden embeddings, KRD δ, the state dict, plus the accuracies) and ``meta.json`` (the key's fields
in readable JSON, accuracies, the payload's size and sha256, creation time, code version). The
root is a local or shared directory or a ``file://``, ``s3://`` or ``gs://`` URI, all through
``pyarrow.fs`` (the layer of Ray Tune's storage); default ``$RBM_TUNE_CACHE/teachers``, else
``~/.cache/rbm-tune/teachers``.

**Integrity.** On a POSIX filesystem an entry is written, fsynced, into a temp directory beside
its place and published by one ``rename``: readers see all of it or nothing, and the first writer
of a key wins. On an object store each file is one PUT, payload first and ``meta.json`` last, so
an entry without ``meta.json`` is incomplete: a miss. Reads check the payload's sha256 and load it
with ``torch.load(weights_only=True)``. A corrupt entry is reported in one warning line, moved
aside to ``<digest>.corrupt-<time>`` (never deleted, never used) and retrained.

**Storage faults.** A cache that cannot be written (read-only, full, no permission) never stops a
run: :meth:`TeacherCache.get_or_train` trains the teacher, says in one warning line that it could
not be stored (with the OS's reason and the fix) and returns it; nothing half-written is left
(the temp directory of a failed write is removed). ``require_cache=True`` (``rbm-tune teacher``,
whose whole point is to fill the cache) makes that a :class:`~rbm_tune.errors.CacheError`
instead. A corrupt entry that cannot be moved aside is still never used.

**Exactly-once training.** :meth:`TeacherCache.get_or_train` trains under a per-key lock: when N
processes want the same missing key, one trains and the others wait, then load its entry. The
lock (``filelock.SoftFileLease`` in ``<root>/.locks/``) is a file made with ``O_CREAT | O_EXCL``
recording host, pid and process start time, refreshed by a heartbeat thread. It works across
processes on one machine and across nodes on a shared filesystem whose exclusive create is
atomic for every client (local disks, NFSv3+, Lustre; ``flock`` may fail on NFS). A dead holder
is replaced at once when it ran on this host, and after ``lock_lease`` seconds without a
heartbeat (timed on the waiter's clock) when it ran elsewhere. Limits: a holder stalled longer
than its lease (frozen node, NFS outage) may let a second process train the same teacher; that
costs time, not correctness, since entries publish atomically and the first stays. All processes
sharing a cache must use the same ``lock_lease``. Object stores have no atomic create, hence no
lock: the search resolves every teacher once on the driver before trials start, so training is
exactly-once there by construction; uncoordinated callers on an object store may each train.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rbm_tune.errors import CacheError

if TYPE_CHECKING:
    import pyarrow.fs

    from rbm_tune.config import TeacherSpec
    from rbm_tune.data import Graph
    from rbm_tune.teacher import TeacherOutputs

__all__ = [
    "LOCK_LEASE_SECONDS",
    "TEACHER_CODE_VERSION",
    "EntryInfo",
    "TeacherCache",
    "TeacherKey",
    "atomic_write_bytes",
    "check_cache_dir",
    "default_teacher_root",
]

# Bump when teacher training or the teacher models change what they compute: old entries miss.
TEACHER_CODE_VERSION = 1
LOCK_LEASE_SECONDS = 60.0
META, PAYLOAD, LOCKS = "meta.json", "payload.pt", ".locks"
_FORMAT = 1
_TENSORS = ("log_probs", "embedding", "krd_delta")
_SCALARS = ("val_acc", "test_acc", "test_acc_oracle", "best_epoch", "epochs", "seconds")
_log = logging.getLogger(__name__)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one (R8).

    The bytes go to a fresh temp file in the same directory (mode from the umask, so a shared
    cache stays readable by the group), are fsynced, then ``os.replace`` the target.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _reason(err: BaseException) -> str:
    """The OS's words for an error (``No space left on device``), else its text."""
    cause = err.__cause__ if isinstance(err, CacheError) and err.__cause__ else err
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)  # pyarrow's strerror is its whole message
    text = " ".join(str(cause).split())
    found = re.search(r"\[errno (\d+)\]", text, re.IGNORECASE)  # pyarrow: "... [errno 30] ..."
    if found:
        return os.strerror(int(found.group(1)))
    return text or type(cause).__name__


def check_cache_dir(cache_dir: str | Path | None) -> TeacherCache:
    """Validate ``--cache-dir`` (or ``RBM_TUNE_CACHE``) without writing anything.

    Returns:
        The teacher cache in ``<cache_dir>/teachers``.

    Raises:
        CacheError: a URI ``pyarrow.fs`` cannot open (``ftp://...``), or a local path that is,
            or lies under, a regular file.
    """
    cache = TeacherCache.in_cache_dir(cache_dir)
    if cache.is_local:
        path = Path(cache.path)
        for candidate in (path, *path.parents):
            if candidate.exists() or candidate.is_symlink():
                if not candidate.is_dir():
                    raise CacheError(
                        f"cannot use the rbm-tune cache {path.parent}: {candidate} is a file, "
                        "not a folder; pass --cache-dir (or set RBM_TUNE_CACHE) to a folder, "
                        "which is created if missing"
                    )
                break
    return cache


def default_teacher_root() -> Path:
    """``$RBM_TUNE_CACHE/teachers``, else ``~/.cache/rbm-tune/teachers``."""
    from rbm_tune.paths import default_cache_dir  # not rbm_tune.data: no torch import

    return default_cache_dir() / "teachers"


@dataclass(frozen=True)
class TeacherKey:
    """Everything that changes a teacher's outputs; ``digest`` names its cache entry.

    Attributes:
        dataset: dataset name (``cora``, ``demo``...).
        setting: ``transductive`` or ``inductive``.
        data_fingerprint: ``Graph.fingerprint``: features, edges, labels, split and setting.
        teacher: every field of the teacher's ``TeacherSpec``, as a plain dict.
        seed: the teacher's training seed.
        code_version: :data:`TEACHER_CODE_VERSION` of the code that trained it.
    """

    dataset: str
    setting: str
    data_fingerprint: str
    teacher: Mapping[str, Any]
    seed: int
    code_version: int = TEACHER_CODE_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "teacher", dict(self.teacher))  # a private, plain copy

    @classmethod
    def of(cls, graph: Graph, spec: TeacherSpec, *, seed: int) -> TeacherKey:
        """The key of training ``spec`` on ``graph`` with ``seed`` (spec §7.5)."""
        return cls(graph.name, graph.setting, graph.fingerprint, spec.to_dict(), seed)

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> TeacherKey:
        """Inverse of :meth:`fields`."""
        return cls(**{name: values[name] for name in _KEY_FIELDS})

    def fields(self) -> dict[str, Any]:
        """The key as readable, JSON-ready values."""
        return {name: getattr(self, name) for name in _KEY_FIELDS}

    @cached_property
    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`fields`."""
        text = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def __hash__(self) -> int:
        return hash(self.digest)


_KEY_FIELDS = ("dataset", "setting", "data_fingerprint", "teacher", "seed", "code_version")


@dataclass(frozen=True)
class EntryInfo:
    """One cached teacher, as ``rbm-tune cache list`` shows it."""

    digest: str
    key: dict[str, Any]
    val_acc: float
    test_acc: float
    size_bytes: int
    created: float
    path: str

    @property
    def age_seconds(self) -> float:
        return max(0.0, time.time() - self.created)


class TeacherCache:
    """A content-addressed store of trained teachers (see the module docstring).

    Args:
        root: directory or URI holding the entries; ``None``: :func:`default_teacher_root`.
        filesystem: a ready ``pyarrow.fs.FileSystem`` (e.g. S3 with explicit credentials);
            ``root`` is then a path inside it.
        lock_timeout: seconds to wait for another process training the same teacher.
        lock_lease: seconds without a heartbeat after which another node's lock is broken;
            every process sharing the cache must agree on it.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        filesystem: pyarrow.fs.FileSystem | None = None,
        lock_timeout: float = 24 * 3600.0,
        lock_lease: float = LOCK_LEASE_SECONDS,
    ) -> None:
        import pyarrow.fs

        self.uri = str(default_teacher_root() if root is None else root)
        if filesystem is not None:
            self.fs, path = filesystem, self.uri
        elif "://" in self.uri:
            try:
                self.fs, path = pyarrow.fs.FileSystem.from_uri(self.uri)
            except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
                raise CacheError(
                    f"cannot open teacher cache {self.uri} ({err}); use a directory or a "
                    "file://, s3:// or gs:// URI"
                ) from None
        else:
            self.fs = pyarrow.fs.LocalFileSystem()
            path = str(Path(self.uri).expanduser().resolve())
        self.path = path.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, pyarrow.fs.LocalFileSystem)
        self.lock_timeout, self.lock_lease = lock_timeout, lock_lease

    @classmethod
    def in_cache_dir(cls, cache_dir: str | Path | None = None, **options: Any) -> TeacherCache:
        """The cache in ``<cache_dir>/teachers``; ``cache_dir`` is what ``--cache-dir`` and
        ``RBM_TUNE_CACHE`` name (a directory or URI); ``None`` gives the default."""
        if cache_dir is None or str(cache_dir) == "":
            return cls(None, **options)
        base, query, rest = str(cache_dir).partition("?")  # s3://b/p?region=x keeps its query
        if "://" not in base:
            return cls(Path(base) / "teachers", **options)
        return cls(f"{base.rstrip('/')}/teachers{query}{rest}", **options)

    def __repr__(self) -> str:
        return f"TeacherCache({self.uri!r})"

    def entry_path(self, key: TeacherKey) -> str:
        """Where ``key``'s entry lives, as a path inside ``self.fs``."""
        return f"{self.path}/{key.digest}"

    def check_writable(self) -> None:
        """Fail now, in one line, when a POSIX cache root cannot take a new file.

        Object stores are not probed (a PUT would cost a request and prove little).

        Raises:
            CacheError: the root cannot be created or written (read-only, permissions, full).
        """
        if not self.is_local:
            return
        root = Path(self.path)
        probe = root / f".probe-{uuid.uuid4().hex}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise CacheError(
                f"cannot write the teacher cache {root} ({_reason(err)}); make it writable, "
                "free some space, or pass another --cache-dir"
            ) from None

    def get(self, key: TeacherKey) -> TeacherOutputs | None:
        """The cached outputs of ``key``, or ``None`` (a corrupt entry is set aside: a miss)."""
        found = self._read(key)
        if isinstance(found, str):
            with self._locked(key, None):  # a concurrent writer may have replaced it meanwhile
                found = self._read(key)
                if isinstance(found, str):
                    self._set_aside(key, found, "")
                    return None
        return found

    def put(self, key: TeacherKey, outputs: TeacherOutputs) -> str:
        """Store ``outputs`` under ``key`` atomically; an existing complete entry is kept.

        Returns:
            The entry's path inside ``self.fs``.

        Raises:
            CacheError: the cache cannot be written.
        """
        import torch

        state = outputs.state_dict
        record: dict[str, Any] = {
            "format": _FORMAT,
            "digest": key.digest,
            **{name: getattr(outputs, name).detach().cpu().clone() for name in _TENSORS},
            "state_dict": None
            if state is None
            else {k: v.cpu().clone() for k, v in state.items()},
            "scalars": {name: getattr(outputs, name) for name in _SCALARS},
        }  # clone(): a view would drag its whole storage into the file
        buffer = io.BytesIO()
        torch.save(record, buffer)
        payload, now = buffer.getvalue(), time.time()
        meta = {
            "format": _FORMAT,
            "digest": key.digest,
            "key": key.fields(),
            **record["scalars"],
            "payload_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "created": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "created_unix": now,
            "code_version": key.code_version,
            "torch_version": torch.__version__,
            "host": socket.gethostname(),
        }
        meta_bytes = json.dumps(meta, indent=2, sort_keys=True).encode()
        entry = self.entry_path(key)
        try:
            if self.is_local:
                self._publish_local(Path(entry), payload, meta_bytes)
            else:  # one PUT per object; meta.json last marks the entry complete
                self.fs.create_dir(entry, recursive=True)
                for name, data in ((PAYLOAD, payload), (META, meta_bytes)):
                    with self.fs.open_output_stream(f"{entry}/{name}") as stream:
                        stream.write(data)
        except OSError as err:
            raise CacheError(
                f"cannot write teacher cache entry {entry} ({err}); make the cache writable or "
                "pass another --cache-dir"
            ) from err
        return entry

    def get_or_train(
        self,
        key: TeacherKey,
        train: Callable[[], TeacherOutputs],
        *,
        log: Callable[[str], None] | None = None,
        require_cache: bool = False,
    ) -> TeacherOutputs:
        """The cached outputs of ``key``; on a miss, ``train()`` once under the key's lock.

        Call it once per key on the search driver; concurrent callers on a POSIX cache wait
        for one trainer and then load its entry. A cache that cannot be written (read-only,
        full) costs a warning, not the run: the teacher is trained and returned uncached.

        Args:
            key: the teacher's key.
            train: trains the teacher; called at most once, only on a miss.
            log: receives progress lines, e.g. ``teacher: loaded from cache <digest[:12]>``.
            require_cache: a failed write raises :class:`CacheError` instead of warning.
        """
        say = log or (lambda _line: None)
        short = key.digest[:12]
        found = self._read(key)
        if found is None or isinstance(found, str):
            with self._locked(key, say):  # no lock on a cache nobody can write: nothing to race
                found = self._read(key)
                if isinstance(found, str):
                    self._set_aside(key, found, " and retraining")
                    found = None
                if found is None:
                    say(f"teacher: not in cache {short}, training")
                    outputs = train()
                    self._store(key, outputs, say, require_cache)
                    return outputs
        say(f"teacher: loaded from cache {short}")
        return found

    def _store(
        self,
        key: TeacherKey,
        outputs: TeacherOutputs,
        say: Callable[[str], None],
        require_cache: bool,
    ) -> None:
        short = key.digest[:12]
        try:
            self.put(key, outputs)
        except CacheError as err:
            if require_cache:
                raise
            _log.warning(
                f"rbm-tune: warning: could not store teacher {short} in the cache {self.uri} "
                f"({_reason(err)}); this run goes on with the teacher it just trained, but the "
                "next run will train it again: free some space or make the cache writable, or "
                "pass another --cache-dir"
            )
            return
        say(f"teacher: trained in {outputs.seconds:.1f}s, cached as {short}")

    def entries(self) -> list[EntryInfo]:
        """Every complete entry, oldest first (``meta.json`` is read, payloads are not)."""
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self.path, allow_not_found=True)
        found = []
        for info in self.fs.get_file_info(selector):
            if info.type != pyarrow.fs.FileType.Directory or not _is_digest(info.base_name):
                continue
            try:
                meta = json.loads(self._read_bytes(f"{info.path}/{META}"))
                files = self.fs.get_file_info(pyarrow.fs.FileSelector(info.path))
                found.append(
                    EntryInfo(
                        digest=info.base_name,
                        key=dict(meta["key"]),
                        val_acc=float(meta["val_acc"]),
                        test_acc=float(meta["test_acc"]),
                        size_bytes=sum(f.size or 0 for f in files),
                        created=float(meta["created_unix"]),
                        path=info.path,
                    )
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue  # incomplete or damaged: get() deals with it, clear() removes it
        return sorted(found, key=lambda e: e.created)

    def remove(self, digest_prefix: str) -> EntryInfo:
        """Delete the one entry whose digest starts with ``digest_prefix``.

        Raises:
            CacheError: no entry or several entries match.
        """
        prefix = digest_prefix.strip().lower()
        matches = [e for e in self.entries() if prefix and e.digest.startswith(prefix)]
        if not matches:
            raise CacheError(
                f"no teacher cache entry matches {digest_prefix!r} in {self.uri}; run "
                "'rbm-tune cache list' to see the keys"
            )
        if len(matches) > 1:
            names = ", ".join(e.digest[:12] for e in matches)
            raise CacheError(
                f"{digest_prefix!r} matches {len(matches)} teacher cache entries ({names}); "
                "give more characters of the key"
            )
        self.fs.delete_dir(matches[0].path)
        return matches[0]

    def clear(self) -> int:
        """Delete every entry and set-aside corrupt entry; returns how many entries it removed.

        Locks are kept, and so are temporary directories younger than an hour (a writer may
        still be filling them).
        """
        import pyarrow.fs

        removed = 0
        selector = pyarrow.fs.FileSelector(self.path, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            name = info.base_name
            if info.type != pyarrow.fs.FileType.Directory or name == LOCKS:
                continue
            if name.startswith(".tmp-") and info.mtime is not None:
                if time.time() - info.mtime.timestamp() < 3600:
                    continue
            elif not _is_digest(name.split(".corrupt-")[0]):
                continue  # not ours
            self.fs.delete_dir(info.path)
            removed += _is_digest(name)
        return removed

    def _read_bytes(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            raise
        except OSError as err:  # permissions, a flaky network mount: not a corrupt entry
            raise CacheError(
                f"cannot read teacher cache file {path} ({err}); check access to the cache or "
                "pass another --cache-dir"
            ) from err

    def _read(self, key: TeacherKey) -> TeacherOutputs | str | None:
        """The entry's outputs; ``None`` if absent; a reason string if it is corrupt."""
        import pyarrow.fs
        import torch

        from rbm_tune.teacher import TeacherOutputs

        entry, missing = self.entry_path(key), pyarrow.fs.FileType.NotFound
        if self.fs.get_file_info(f"{entry}/{META}").type == missing:
            if not self.is_local or self.fs.get_file_info(entry).type == missing:
                return None  # object store: an upload in progress or interrupted; put() redoes it
            return "meta.json is missing"
        try:
            meta = json.loads(self._read_bytes(f"{entry}/{META}"))
            expected, size = str(meta["payload_sha256"]), int(meta["payload_bytes"])
        except FileNotFoundError:
            return None  # removed while we looked
        except (ValueError, KeyError, TypeError) as err:
            return f"meta.json is unreadable: {type(err).__name__}"
        if meta.get("digest") != key.digest:
            return "meta.json belongs to another key"
        try:
            payload = self._read_bytes(f"{entry}/{PAYLOAD}")
        except FileNotFoundError:
            return "payload.pt is missing"
        if len(payload) != size:
            return f"payload.pt is truncated: {len(payload)} of {size} bytes"
        if hashlib.sha256(payload).hexdigest() != expected:
            return "payload.pt fails its sha256 checksum"
        try:
            record = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            tensors = [record[name] for name in _TENSORS]
            if record["digest"] != key.digest or len({t.size(0) for t in tensors}) != 1:
                return "payload.pt does not match its key"
            return TeacherOutputs(*tensors, **record["scalars"], state_dict=record["state_dict"])
        except Exception as err:  # a checksummed payload from another version of the format
            return f"payload.pt is unreadable: {type(err).__name__}"

    def _set_aside(self, key: TeacherKey, why: str, then: str) -> None:
        import pyarrow.fs

        entry = self.entry_path(key)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = f"{entry}.corrupt-{stamp}"
        try:
            if self.is_local:
                self.fs.move(entry, aside)  # a rename
            else:
                selector = pyarrow.fs.FileSelector(entry)  # entries are flat
                for info in self.fs.get_file_info(selector):
                    if info.type == pyarrow.fs.FileType.File:
                        self.fs.copy_file(info.path, f"{aside}/{info.base_name}")
                self.fs.delete_dir(entry)
        except FileNotFoundError:
            return  # another process set it aside first
        except OSError as err:  # a read-only cache: report it, and still never use it
            _log.warning(
                f"rbm-tune: warning: teacher cache entry {entry} is corrupt ({why}) and could "
                f"not be moved aside ({_reason(err)}); not using it{then}; remove it, or pass "
                "a writable --cache-dir"
            )
            return
        _log.warning(
            f"rbm-tune: warning: teacher cache entry {entry} is corrupt ({why}); "
            f"moved aside to {aside}{then}"
        )

    def _publish_local(self, entry: Path, payload: bytes, meta: bytes) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.parent / f".tmp-{entry.name[:16]}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            atomic_write_bytes(tmp / PAYLOAD, payload)
            atomic_write_bytes(tmp / META, meta)
            try:
                os.rename(tmp, entry)  # one step: readers see the whole entry or none
            except OSError:
                if not entry.exists():
                    raise
                # another writer published this key first; its entry stays (same key, same teacher)
            else:
                dir_fd = os.open(entry.parent, os.O_RDONLY)
                os.fsync(dir_fd)  # make the rename itself durable
                os.close(dir_fd)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # left only when the rename did not happen

    @contextlib.contextmanager
    def _locked(self, key: TeacherKey, say: Callable[[str], None] | None) -> Iterator[bool]:
        """Hold ``key``'s lock (POSIX roots); a no-op on object stores (module docstring).

        Yields whether the lock is held: ``False`` when the lock file cannot be created at all
        (a read-only or full cache), where no other process can publish an entry either.
        """
        if not self.is_local:
            yield True
            return
        from filelock import LeaseSettingsMismatch, SoftFileLease, Timeout

        lock_dir = Path(self.path) / LOCKS
        lock = SoftFileLease(lock_dir / f"{key.digest}.lock", lease_duration=self.lock_lease)
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(blocking=False)
            except Timeout:
                owner = lock.owner
                holder = f"pid {owner.pid} on {owner.hostname}" if owner else "another process"
                if say is not None:
                    say(f"teacher: waiting for {holder} to train {key.digest[:12]}")
                lock.acquire(timeout=self.lock_timeout)
        except Timeout:
            raise CacheError(
                f"timed out after {self.lock_timeout:.0f}s waiting for the teacher lock "
                f"{lock.lock_file}; if no process is training this teacher, delete that file"
            ) from None
        except LeaseSettingsMismatch:
            raise CacheError(
                f"the teacher lock {lock.lock_file} uses another lease; give every process "
                "sharing the cache the same lock_lease"
            ) from None
        except OSError:  # Timeout is an OSError too: this clause must stay last
            held = False
        else:
            held = True
        if not held:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()


def _is_digest(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)
