"""A content-keyed store on disk or in an object store: the layer under the teacher cache and
the DeepWalk embedding cache.

**Layout.** ``<root>/<digest>/`` holds ``payload.pt`` (the bytes a cache puts there) and
``meta.json`` (readable JSON: what the cache adds, plus the payload's size and sha256, creation
time and host). ``digest`` is 64 lowercase hex characters, the sha256 of whatever the caller
keys by. The root is a local or shared directory or a ``file://``, ``s3://`` or ``gs://`` URI,
all through ``pyarrow.fs`` (the layer of Ray Tune's storage).

**Integrity.** On a POSIX filesystem an entry is written, fsynced, into a temp directory beside
its place and published by one ``rename``: readers see all of it or nothing, and the first writer
of a digest wins. On an object store each file is one PUT, payload first and ``meta.json`` last,
so an entry without ``meta.json`` is incomplete: a miss. Reads check the payload's size and
sha256, then the caller's ``decode`` (which raises :class:`CorruptEntry` for a payload it cannot
use). A corrupt entry is reported in one warning line, moved aside to
``<digest>.corrupt-<time>`` (never deleted, never used) and made again.

**Faults and races.** A store that cannot be written (read-only, full) costs
:meth:`ContentStore.get_or_create` one warning line, not the run. It creates under a per-digest
lock in ``<root>/.locks/`` (:func:`rbm_tune.locks.lease_lock` says what that guarantees): of N
processes wanting one missing entry, one creates it and the others wait, then load it. Object
stores have no atomic create, hence no lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rbm_tune.atomic import atomic_write_bytes, publish_dir
from rbm_tune.errors import CacheError
from rbm_tune.locks import LOCK_LEASE_SECONDS, lease_lock

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = [
    "LOCKS",
    "LOCK_LEASE_SECONDS",
    "META",
    "PAYLOAD",
    "ContentStore",
    "CorruptEntry",
    "Entry",
    "atomic_write_bytes",
    "content_digest",
    "filesystem_of",
    "is_digest",
    "reason",
]

META, PAYLOAD, LOCKS = "meta.json", "payload.pt", ".locks"
T = TypeVar("T")


def filesystem_of(root: str | Path) -> tuple[pyarrow.fs.FileSystem, str]:
    """``root`` (a directory or a URI ``pyarrow.fs`` opens) as (file system, absolute path in
    it without a trailing slash). Raises what ``pyarrow.fs.FileSystem.from_uri`` raises."""
    import pyarrow.fs

    text = str(root)
    if "://" in text:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(text)
    else:
        filesystem, path = pyarrow.fs.LocalFileSystem(), str(Path(text).expanduser().resolve())
    return filesystem, path.rstrip("/") or "/"


class CorruptEntry(Exception):  # noqa: N818 - a reason, raised by decoders, never shown raw
    """Raised by a ``decode`` callable: the payload passed its checksum but cannot be used.

    Its text is the reason shown in the one-line warning (``payload.pt does not match its key``).
    """


@dataclass(frozen=True)
class Entry:
    """One entry as read back: its ``meta.json`` (parsed) and checksummed payload bytes."""

    digest: str
    meta: dict[str, Any]
    payload: bytes


def content_digest(text: str) -> str:
    """sha256 (hex) of ``text``: the digest naming the entry of a key written as text."""
    return hashlib.sha256(text.encode()).hexdigest()


def is_digest(name: str) -> bool:
    """Whether ``name`` is an entry's folder name (64 lowercase hex characters)."""
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def reason(err: BaseException) -> str:
    """The OS's words for an error (``No space left on device``), else its text."""
    cause = err.__cause__ if isinstance(err, CacheError) and err.__cause__ else err
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)  # pyarrow's strerror is its whole message
    text = " ".join(str(cause).split())
    found = re.search(r"\[errno (\d+)\]", text, re.IGNORECASE)  # pyarrow: "... [errno 30] ..."
    if found:
        return os.strerror(int(found.group(1)))
    return text or type(cause).__name__


class ContentStore:
    """Entries keyed by a content digest (see the module docstring).

    Args:
        root: directory or URI holding the entries.
        filesystem: a ready ``pyarrow.fs.FileSystem`` (e.g. S3 with explicit credentials);
            ``root`` is then a path inside it.
        lock_timeout: seconds to wait for another process creating the same entry.
        lock_lease: seconds without a heartbeat after which another node's lock is broken;
            every process sharing the store must agree on it.
        what: the store's name in messages (``teacher cache``).
        noun: what an entry holds, in messages (``teacher``).
        verbs: how one makes a ``noun``, in messages: verb, present participle, past participle
            (``("train", "training", "trained")``).
        logger: where the one-line warnings go.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        filesystem: pyarrow.fs.FileSystem | None = None,
        lock_timeout: float = 24 * 3600.0,
        lock_lease: float = LOCK_LEASE_SECONDS,
        what: str = "cache",
        noun: str = "entry",
        verbs: tuple[str, str, str] = ("make", "making", "made"),
        logger: str = __name__,
    ) -> None:
        import pyarrow.fs

        self.uri = str(root)
        self.what, self.noun, self.verbs, self._logger = what, noun, verbs, logger
        if filesystem is not None:
            self.fs, self.path = filesystem, self.uri.rstrip("/") or "/"
        else:
            try:
                self.fs, self.path = filesystem_of(self.uri)
            except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
                raise CacheError(
                    f"cannot open {what} {self.uri} ({err}); use a directory or a "
                    "file://, s3:// or gs:// URI"
                ) from None
        self.is_local = isinstance(self.fs, pyarrow.fs.LocalFileSystem)
        self.lock_timeout, self.lock_lease = lock_timeout, lock_lease

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def _warn(self, line: str) -> None:
        logging.getLogger(self._logger).warning(f"rbm-tune: warning: {line}")

    def entry_dir(self, digest: str) -> str:
        """Where ``digest``'s entry lives, as a path inside ``self.fs``."""
        return f"{self.path}/{digest}"

    def check_writable(self) -> None:
        """Fail now, in one line, when a POSIX root cannot take a new file.

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
                f"cannot write the {self.what} {root} ({reason(err)}); make it writable, "
                "free some space, or pass another --cache-dir"
            ) from None

    # -- reading --------------------------------------------------------------------------------

    def read_bytes(self, path: str) -> bytes:
        """A file's bytes; an unreadable (not absent) file is a :class:`CacheError`."""
        try:
            with self.fs.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            raise
        except OSError as err:  # permissions, a flaky network mount: not a corrupt entry
            raise CacheError(
                f"cannot read {self.what} file {path} ({err}); check access to the cache or "
                "pass another --cache-dir"
            ) from err

    def has(self, digest: str) -> bool:
        """Whether a complete entry (its ``meta.json``, written last) is there; reads no
        payload."""
        import pyarrow.fs

        found = self.fs.get_file_info(f"{self.entry_dir(digest)}/{META}")
        return bool(found.type != pyarrow.fs.FileType.NotFound)

    def read(self, digest: str, decode: Callable[[Entry], T]) -> T | str | None:
        """The decoded entry; ``None`` if absent; a reason string if it is corrupt."""
        import pyarrow.fs

        entry, missing = self.entry_dir(digest), pyarrow.fs.FileType.NotFound
        if self.fs.get_file_info(f"{entry}/{META}").type == missing:
            if not self.is_local or self.fs.get_file_info(entry).type == missing:
                return None  # object store: an upload in progress or interrupted; put redoes it
            return f"{META} is missing"
        try:
            meta = json.loads(self.read_bytes(f"{entry}/{META}"))
            expected, size = str(meta["payload_sha256"]), int(meta["payload_bytes"])
        except FileNotFoundError:
            return None  # removed while we looked
        except (ValueError, KeyError, TypeError) as err:
            return f"{META} is unreadable: {type(err).__name__}"
        if meta.get("digest") != digest:
            return f"{META} belongs to another key"
        try:
            payload = self.read_bytes(f"{entry}/{PAYLOAD}")
        except FileNotFoundError:
            return f"{PAYLOAD} is missing"
        if len(payload) != size:
            return f"{PAYLOAD} is truncated: {len(payload)} of {size} bytes"
        if hashlib.sha256(payload).hexdigest() != expected:
            return f"{PAYLOAD} fails its sha256 checksum"
        try:
            return decode(Entry(digest, meta, payload))
        except CorruptEntry as err:
            return str(err)
        except Exception as err:  # a checksummed payload from another version of the format
            return f"{PAYLOAD} is unreadable: {type(err).__name__}"

    def get_entry(self, digest: str, decode: Callable[[Entry], T]) -> T | None:
        """The decoded entry, or ``None`` (a corrupt entry is set aside: a miss)."""
        found = self.read(digest, decode)
        if isinstance(found, str):
            with self.locked(digest, None):  # a concurrent writer may have replaced it meanwhile
                found = self.read(digest, decode)
                if isinstance(found, str):
                    self.set_aside(digest, found, "")
                    return None
        return found

    # -- writing --------------------------------------------------------------------------------

    def put_entry(self, digest: str, payload: bytes, meta: dict[str, Any]) -> str:
        """Store ``payload`` with ``meta`` (plus digest, size, sha256, time, host) atomically;
        an existing complete entry is kept.

        Returns:
            The entry's path inside ``self.fs``.

        Raises:
            CacheError: the store cannot be written.
        """
        now = time.time()
        meta = {
            **meta,
            "digest": digest,
            "payload_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "created": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "created_unix": now,
            "host": socket.gethostname(),
        }
        meta_bytes = json.dumps(meta, indent=2, sort_keys=True).encode()
        entry = self.entry_dir(digest)
        try:
            if self.is_local:
                publish_dir(Path(entry), {PAYLOAD: payload, META: meta_bytes})
            else:  # one PUT per object; meta.json last marks the entry complete
                self.fs.create_dir(entry, recursive=True)
                for name, data in ((PAYLOAD, payload), (META, meta_bytes)):
                    with self.fs.open_output_stream(f"{entry}/{name}") as stream:
                        stream.write(data)
        except OSError as err:
            raise CacheError(
                f"cannot write {self.what} entry {entry} ({err}); make the cache writable or "
                "pass another --cache-dir"
            ) from err
        return entry

    def get_or_create(
        self,
        digest: str,
        *,
        decode: Callable[[Entry], T],
        create: Callable[[], T],
        encode: Callable[[T], tuple[bytes, dict[str, Any]]],
        say: Callable[[str], None] | None = None,
        require: bool = False,
        redo: str = " and recomputing",
        on_stored: Callable[[T], None] | None = None,
    ) -> tuple[T, bool]:
        """The stored value of ``digest``; on a miss, ``create()`` once under the digest's lock.

        A store that cannot be written costs one warning line, not the run (unless
        ``require``): the value is made and returned unstored.

        Args:
            digest: the entry's name.
            decode: bytes and meta back to the value; raises :class:`CorruptEntry`.
            create: makes the value; called at most once, only on a miss.
            encode: the value to ``(payload bytes, meta fields)``.
            say: receives ``<noun>: waiting for <holder> ...`` while another process creates it.
            require: a failed write raises :class:`CacheError` instead of warning.
            redo: ends the corrupt-entry warning (`` and retraining``).
            on_stored: called with the value once it is stored.

        Returns:
            The value, and whether it was created here.
        """
        found = self.read(digest, decode)
        if found is not None and not isinstance(found, str):
            return found, False
        with self.locked(digest, say):  # no lock on a store nobody can write: nothing to race
            found = self.read(digest, decode)
            if isinstance(found, str):
                self.set_aside(digest, found, redo)
                found = None
            if found is not None:
                return found, False
            value = create()
            try:
                payload, meta = encode(value)
                self.put_entry(digest, payload, meta)
            except CacheError as err:
                if require:
                    raise
                verb, _, made = self.verbs
                self._warn(
                    f"could not store {self.noun} {digest[:12]} in the cache {self.uri} "
                    f"({reason(err)}); this run goes on with the {self.noun} it just {made}, but "
                    f"the next run will {verb} it again: free some space or make the cache "
                    "writable, or pass another --cache-dir"
                )
                return value, True
        if on_stored is not None:
            on_stored(value)
        return value, True

    # -- listing and removing ---------------------------------------------------------------

    def scan(self) -> Iterator[tuple[str, str, dict[str, Any], int]]:
        """``(digest, path, meta, size in bytes)`` of every complete entry, unordered;
        ``meta.json`` is read, payloads are not."""
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self.path, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type != pyarrow.fs.FileType.Directory or not is_digest(info.base_name):
                continue
            try:
                meta = json.loads(self.read_bytes(f"{info.path}/{META}"))
                files = self.fs.get_file_info(pyarrow.fs.FileSelector(info.path))
            except (OSError, ValueError):
                continue  # incomplete or damaged: get_entry() deals with it, clear() removes it
            if isinstance(meta, dict):
                yield info.base_name, info.path, meta, sum(f.size or 0 for f in files)

    def delete(self, path: str) -> None:
        """Remove one entry folder (a path from :meth:`scan`)."""
        self.fs.delete_dir(path)

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
            elif not is_digest(name.split(".corrupt-")[0]):
                continue  # not ours
            self.fs.delete_dir(info.path)
            removed += is_digest(name)
        return removed

    # -- internals ------------------------------------------------------------------------------

    def set_aside(self, digest: str, why: str, then: str) -> None:
        """Move a corrupt entry to ``<digest>.corrupt-<time>`` with one warning line."""
        import pyarrow.fs

        entry = self.entry_dir(digest)
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
            self._warn(
                f"{self.what} entry {entry} is corrupt ({why}) and could not be moved aside "
                f"({reason(err)}); not using it{then}; remove it, or pass a writable --cache-dir"
            )
            return
        self._warn(f"{self.what} entry {entry} is corrupt ({why}); moved aside to {aside}{then}")

    def locked(
        self, digest: str, say: Callable[[str], None] | None
    ) -> contextlib.AbstractContextManager[bool]:
        """Hold ``digest``'s lock (POSIX roots); a no-op on object stores (module docstring).

        Yields whether the lock is held: ``False`` when the lock file cannot be created at all
        (a read-only or full store), where no other process can publish an entry either.
        """
        if not self.is_local:
            return contextlib.nullcontext(True)
        verb, verbing, _ = self.verbs
        return lease_lock(
            Path(self.path) / LOCKS / f"{digest}.lock",
            lease=self.lock_lease,
            timeout=self.lock_timeout,
            waiting=None
            if say is None
            else f"{self.noun}: waiting for {{holder}} to {verb} {digest[:12]}",
            say=say,
            what=f"{self.noun} lock",
            stale=f"if no process is {verbing} this {self.noun}, delete that file",
        )
