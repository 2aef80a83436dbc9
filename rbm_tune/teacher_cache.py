"""Teacher cache: train each teacher once, reuse it in every trial, study and node (method §10.2).

**Key.** :class:`TeacherKey` covers everything that changes a teacher's outputs (method §7.5): the
dataset and setting, the graph's fingerprint (features, edges, labels, split), every field of the
``TeacherSpec``, the training seed and :data:`TEACHER_CODE_VERSION` (bump it when ``teacher.py``
or ``models/teachers.py`` change what they compute). The device is not in the key.

**Layout.** A :class:`~rbm_tune.store.ContentStore` (atomic publish, checksum on read, corrupt
entries moved aside with one warning line, a per-key lock, object stores through ``pyarrow.fs``;
its docstring has the details). ``<root>/<digest>/`` holds ``payload.pt`` (``torch.save`` of
plain tensors: log-probs, hidden embeddings, KRD δ, the state dict, plus the accuracies, loaded
with ``torch.load(weights_only=True)``) and ``meta.json`` (the key's fields in readable JSON,
accuracies, the payload's size and sha256, creation time, code version). The root defaults to
``$RBM_TUNE_CACHE/teachers``, else ``~/.cache/rbm-tune/teachers``.

**Storage faults.** A cache that cannot be written (read-only, full, no permission) never stops a
run: :meth:`TeacherCache.get_or_train` trains the teacher, says in one warning line that it could
not be stored (with the OS's reason and the fix) and returns it. ``require_cache=True``
(``rbm-tune teacher``, whose whole point is to fill the cache) makes that a
:class:`~rbm_tune.errors.CacheError` instead. A corrupt entry that cannot be moved aside is
still never used.

**Exactly-once training.** :meth:`TeacherCache.get_or_train` trains under the key's lock: when N
processes want the same missing key, one trains and the others wait, then load its entry. On an
object store (no lock) the search resolves every teacher once on the driver before trials start,
so training is exactly-once there by construction; uncoordinated callers may each train.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rbm_tune.errors import CacheError
from rbm_tune.paths import cache_subdir
from rbm_tune.store import (
    LOCK_LEASE_SECONDS,
    PAYLOAD,
    ContentStore,
    CorruptEntry,
    Entry,
    atomic_write_bytes,
)

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
_FORMAT = 1
_TENSORS = ("log_probs", "embedding", "krd_delta")
_SCALARS = ("val_acc", "test_acc", "test_acc_oracle", "best_epoch", "epochs", "seconds")


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
        """The key of training ``spec`` on ``graph`` with ``seed`` (method §7.5)."""
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


class TeacherCache(ContentStore):
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
        super().__init__(
            default_teacher_root() if root is None else root,
            filesystem=filesystem,
            lock_timeout=lock_timeout,
            lock_lease=lock_lease,
            what="teacher cache",
            noun="teacher",
            verbs=("train", "training", "trained"),
            logger=__name__,
        )

    @classmethod
    def in_cache_dir(cls, cache_dir: str | Path | None = None, **options: Any) -> TeacherCache:
        """The cache in ``<cache_dir>/teachers``; ``cache_dir`` is what ``--cache-dir`` and
        ``RBM_TUNE_CACHE`` name (a directory or URI); ``None`` gives the default."""
        return cls(cache_subdir(cache_dir, "teachers"), **options)

    def entry_path(self, key: TeacherKey) -> str:
        """Where ``key``'s entry lives, as a path inside ``self.fs``."""
        return self.entry_dir(key.digest)

    def get(self, key: TeacherKey) -> TeacherOutputs | None:
        """The cached outputs of ``key``, or ``None`` (a corrupt entry is set aside: a miss)."""
        return self.get_entry(key.digest, _decode)

    def contains(self, key: TeacherKey) -> bool:
        """Whether ``key`` has a complete entry (nothing is read or checked)."""
        return self.has(key.digest)

    def put(self, key: TeacherKey, outputs: TeacherOutputs) -> str:
        """Store ``outputs`` under ``key`` atomically; an existing complete entry is kept.

        Returns:
            The entry's path inside ``self.fs``.

        Raises:
            CacheError: the cache cannot be written.
        """
        return self.put_entry(key.digest, *_encode(key, outputs))

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

        def create() -> TeacherOutputs:
            say(f"teacher: not in cache {short}, training")
            return train()

        outputs, trained = self.get_or_create(
            key.digest,
            decode=_decode,
            create=create,
            encode=lambda outputs: _encode(key, outputs),
            say=say,
            require=require_cache,
            redo=" and retraining",
            on_stored=lambda out: say(
                f"teacher: trained in {out.seconds:.1f}s, cached as {short}"
            ),
        )
        if not trained:
            say(f"teacher: loaded from cache {short}")
        return outputs

    def entries(self) -> list[EntryInfo]:
        """Every complete entry, oldest first (``meta.json`` is read, payloads are not)."""
        found = []
        for digest, path, meta, size in self.scan():
            try:
                found.append(
                    EntryInfo(
                        digest=digest,
                        key=dict(meta["key"]),
                        val_acc=float(meta["val_acc"]),
                        test_acc=float(meta["test_acc"]),
                        size_bytes=size,
                        created=float(meta["created_unix"]),
                        path=path,
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue  # damaged: get() deals with it, clear() removes it
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
        self.delete(matches[0].path)
        return matches[0]


def _encode(key: TeacherKey, outputs: TeacherOutputs) -> tuple[bytes, dict[str, Any]]:
    """``payload.pt`` (plain tensors, ``torch.save``) and the teacher's ``meta.json`` fields."""
    import torch

    state = outputs.state_dict
    record: dict[str, Any] = {
        "format": _FORMAT,
        "digest": key.digest,
        **{name: getattr(outputs, name).detach().cpu().clone() for name in _TENSORS},
        "state_dict": None if state is None else {k: v.cpu().clone() for k, v in state.items()},
        "scalars": {name: getattr(outputs, name) for name in _SCALARS},
    }  # clone(): a view would drag its whole storage into the file
    buffer = io.BytesIO()
    torch.save(record, buffer)
    meta = {
        "format": _FORMAT,
        "key": key.fields(),
        **record["scalars"],
        "code_version": key.code_version,
        "torch_version": torch.__version__,
    }
    return buffer.getvalue(), meta


def _decode(entry: Entry) -> TeacherOutputs:
    import torch

    from rbm_tune.teacher import TeacherOutputs

    record = torch.load(io.BytesIO(entry.payload), map_location="cpu", weights_only=True)
    tensors = [record[name] for name in _TENSORS]
    if record["digest"] != entry.digest or len({t.size(0) for t in tensors}) != 1:
        raise CorruptEntry(f"{PAYLOAD} does not match its key")
    fields = {**record["scalars"], "state_dict": record["state_dict"]}
    return TeacherOutputs(*tensors, **fields)
