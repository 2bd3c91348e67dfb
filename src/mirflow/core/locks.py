"""Track leases: at most one worker (process, machine) works on a track at a time.

A lease is a non-blocking ``filelock`` lock on ``<Track>/.mirflow.lock``. A track whose lock is
held is skipped, not waited for; a later pass picks it up. The lock is an OS file lock (``flock``)
held by an open file descriptor, so the kernel releases it when the holder dies, even by SIGKILL:
a dead worker never blocks a track for good. On network file systems this relies on the file
system's lock support (NFSv4, Lustre, BeeGFS and CephFS provide it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from filelock import FileLock, Timeout

from .dataset import Track
from .fsutil import TMP_PREFIX

log = logging.getLogger(__name__)


class Lease:
    """A held lease on one track; release it with :meth:`release` (or use as a context manager)."""

    def __init__(self, track: Track, lock: FileLock) -> None:
        self.track = track
        self._lock = lock

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)

    def clean_stale_temporaries(self) -> list[Path]:
        """Delete temporary files a dead worker left in the track folder (safe: we hold the lease)."""
        removed = []
        for p in self.track.dir.glob(f"{TMP_PREFIX}*"):
            try:
                p.unlink()
                removed.append(p)
            except OSError as exc:
                log.warning("cannot remove stale temporary %s: %s", p, exc)
        return removed

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_lease(track: Track) -> Lease | None:
    """Take the track's lease without waiting; ``None`` when another worker holds it."""
    lock = FileLock(str(track.lock_path), timeout=0, thread_local=False)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        return None
    return Lease(track, lock)
