"""A lease lock on a file: one process at a time, across processes and nodes sharing a folder.

The lock (``filelock.SoftFileLease``) is a file made with ``O_CREAT | O_EXCL`` recording host,
pid and process start time, refreshed by a heartbeat thread. It works across processes on one
machine and across nodes on a shared filesystem whose exclusive create is atomic for every
client (local disks, NFSv3+, Lustre; ``flock`` may fail on NFS). A dead holder is replaced at
once when it ran on this host, and after ``lease`` seconds without a heartbeat (timed on the
waiter's clock) when it ran elsewhere. Limits: a holder stalled longer than its lease (frozen
node, NFS outage) may let a second process in; callers must make that cost time, not
correctness (the content store publishes entries atomically and the first stays). Every process
sharing a lock must use the same ``lease``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from rbm_tune.errors import CacheError

__all__ = ["LOCK_LEASE_SECONDS", "lease_lock"]

LOCK_LEASE_SECONDS = 60.0


@contextlib.contextmanager
def lease_lock(
    path: Path,
    *,
    lease: float = LOCK_LEASE_SECONDS,
    timeout: float,
    what: str,
    stale: str,
    waiting: str | None = None,
    say: Callable[[str], None] | None = None,
) -> Iterator[bool]:
    """Hold the lock file ``path`` (its folder is created).

    Args:
        lease: seconds without a heartbeat after which another node's lock is broken.
        timeout: seconds to wait for a live holder.
        what: the lock's name in errors (``teacher lock``).
        stale: what to do when the wait times out, for the error line.
        waiting: said (through ``say``) when another process holds the lock; ``{holder}`` is
            replaced by ``pid N on HOST``.

    Yields:
        Whether the lock is held: ``False`` when the lock file cannot be created at all (a
        read-only or full folder), where no other process can take it either.

    Raises:
        CacheError: the wait timed out, or the holder uses another lease.
    """
    from filelock import LeaseSettingsMismatch, SoftFileLease, Timeout

    lock = SoftFileLease(path, lease_duration=lease)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            owner = lock.owner
            holder = f"pid {owner.pid} on {owner.hostname}" if owner else "another process"
            if say is not None and waiting is not None:
                say(waiting.replace("{holder}", holder))
            lock.acquire(timeout=timeout)
    except Timeout:
        raise CacheError(
            f"timed out after {timeout:.0f}s waiting for the {what} {lock.lock_file}; {stale}"
        ) from None
    except LeaseSettingsMismatch:
        raise CacheError(
            f"the {what} {lock.lock_file} uses another lease; give every process sharing the "
            "cache the same lock_lease"
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
