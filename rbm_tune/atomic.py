"""Atomic writes on a POSIX filesystem: readers see the old content or the whole new one (R8)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

__all__ = ["atomic_write_bytes", "publish_dir"]


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


def publish_dir(target: Path, files: dict[str, bytes]) -> bool:
    """Create the folder ``target`` holding ``files`` (name -> bytes) in one ``rename``.

    The files are written, fsynced, into a temp folder beside ``target`` that is then renamed;
    a failed write leaves nothing behind. If ``target`` already exists (another writer
    published it first) it is kept as it is.

    Returns:
        Whether this call published ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name[:16]}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        try:
            os.rename(tmp, target)  # one step: readers see the whole folder or none
        except OSError:
            if not target.exists():
                raise
            return False  # another writer published it first; its folder stays
        dir_fd = os.open(target.parent, os.O_RDONLY)
        os.fsync(dir_fd)  # make the rename itself durable
        os.close(dir_fd)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # left only when the rename did not happen
