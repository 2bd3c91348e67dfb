"""Objects handed between processes with their large arrays in shared memory, not through pipes.

The local executor's GPU lane hands each track it separated (the decoded mix and four stems: about
97 MB of float32 for a 55 s stereo 44.1 kHz track) through the coordinator to a CPU worker. Pickled
through the pipes, that is a copy into a pickle, a pipe transfer and a copy out at each of the two
hops, and the coordinator, which also merges sidecars and draws the progress bar, would spend as much
CPU on the arrays as the lane does. :func:`ship` instead pickles the object with its large buffers
*out of band* (pickle protocol 5), copies them once into one file on a RAM-backed file system
(``/dev/shm`` on Linux) and returns a :class:`Shipped` handle of a few hundred bytes; the coordinator
forwards the handle, and :meth:`Shipped.open` in the receiving process maps the file (copy-on-write)
and rebuilds the object around it, without copying the arrays again.

Nothing is lost and nothing is left behind:

- space is reserved with ``posix_fallocate`` before anything is written, so a full ``/dev/shm``
  (Docker gives 64 MB by default) is an ``ENOSPC`` error and the object is pickled in band
  instead, never a ``SIGBUS`` on a page that could not be backed;
- where there is no such file system (macOS, Windows) or it is not writable, objects are pickled in
  band as before;
- the coordinator releases (unlinks) every handle it forwarded once the receiving task is over,
  whatever happened to it (:meth:`Shipped.release`, idempotent): a task retried after its receiver
  was killed opens the same file again, and pages already mapped live as long as the arrays do;
- when the executor shuts down it removes what its ended children created (a process killed
  between writing a file and sending its handle), and at start files whose coordinator no longer
  exists (:func:`sweep`).

File names are ``mirflow-<owner pid>-<creator pid>-<n>-<random>``: the owner is the coordinator,
set in each child with :func:`set_owner`.
"""

from __future__ import annotations

import errno
import itertools
import logging
import mmap
import os
import pickle
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HandOffLost

log = logging.getLogger(__name__)

#: Buffers smaller than this stay in the pickle (a file per small array would cost more than it saves).
MIN_BYTES = 16 << 10
#: Offsets of the buffers in the file are multiples of this (cache lines, SIMD loads).
ALIGN = 64
PREFIX = "mirflow-"

_owner = os.getpid()
_counter = itertools.count()


def set_owner(pid: int) -> None:
    """Name the files this process creates after ``pid`` (the coordinator), so the coordinator can
    sweep them. Called first thing in every child process."""
    global _owner
    _owner = int(pid)


def shared_dir() -> Path | None:
    """The RAM-backed folder hand-off files go to (``/dev/shm``), or ``None`` where there is none
    that this process may write (arrays are then pickled in band)."""
    path = Path("/dev/shm")
    if sys.platform.startswith("linux") and path.is_dir() and os.access(path, os.W_OK | os.X_OK):
        return path
    return None


@dataclass
class Shipped:
    """A picklable handle to an object whose large buffers wait in a shared-memory file.

    ``data`` is the object's pickle without those buffers; ``spans`` are their ``(offset, length)``
    in the file at ``path`` (``None`` when everything is in ``data``)."""

    data: bytes
    path: str | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes held in shared memory (0 when pickled in band)."""
        return sum(n for _, n in self.spans)

    def open(self) -> Any:
        """The object, its large arrays mapped from the file (writable, copy-on-write: the file
        never changes). The file stays until :meth:`release`, so a task retried on another process
        (its first receiver was killed) can open it again. :class:`HandOffLost` when it is gone."""
        if self.path is None:
            return pickle.loads(self.data)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise HandOffLost(f"shared-memory hand-off {self.path} is gone (removed before it was "
                              f"read: the run was stopped, or something cleaned {Path(self.path).parent})"
                              ) from None
        try:
            size = os.fstat(fd).st_size
            mapped = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
        finally:
            os.close(fd)
        view = memoryview(mapped)
        return pickle.loads(self.data, buffers=[view[off:off + n] for off, n in self.spans])

    def release(self) -> None:
        """Remove the file (if still there); arrays already mapped from it stay valid."""
        if self.path is not None:
            Path(self.path).unlink(missing_ok=True)


def ship(obj: Any, *, folder: Path | None = None, min_bytes: int = MIN_BYTES) -> Shipped:
    """``obj`` as a :class:`Shipped` handle, its buffers of ``min_bytes`` or more (contiguous NumPy
    arrays) in one file under ``folder`` (default :func:`shared_dir`). Falls back to an ordinary
    pickle when there is no such folder, nothing large to put there, or no room (``ENOSPC``)."""
    folder = shared_dir() if folder is None else folder
    if folder is None:
        return Shipped(pickle.dumps(obj, protocol=5))
    buffers: list[pickle.PickleBuffer] = []

    def out_of_band(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes < min_bytes:
            return True  # true: keep it in the pickle
        buffers.append(buf)
        return False

    data = pickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
    if not buffers:
        return Shipped(data)
    spans, end = [], 0
    for buf in buffers:
        start = -(-end // ALIGN) * ALIGN
        spans.append((start, buf.raw().nbytes))
        end = start + buf.raw().nbytes
    path = folder / f"{PREFIX}{_owner}-{os.getpid()}-{next(_counter)}-{secrets.token_hex(4)}"
    try:
        _write(path, buffers, spans, end)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        log.warning("no room for a %.0f MB hand-off in %s (%s); sending it through the pipe",
                    end / 1e6, folder, os.strerror(exc.errno or 0))
        return Shipped(pickle.dumps(obj, protocol=5))
    return Shipped(data, str(path), spans)


def _write(path: Path, buffers: list[pickle.PickleBuffer], spans: list[tuple[int, int]], size: int) -> None:
    """Reserve ``size`` bytes at ``path`` (exclusive create), then copy each buffer to its span.
    The file is removed again when anything fails."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)  # ENOSPC now, instead of SIGBUS on a page written later
        with mmap.mmap(fd, size) as mapped:
            for buf, (off, n) in zip(buffers, spans):
                # NumPy copies without the GIL (a slice assignment to the mmap holds it): the lane's
                # model and decode threads go on meanwhile
                np.copyto(np.frombuffer(mapped, np.uint8, n, off), np.frombuffer(buf.raw(), np.uint8))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def sweep(*, owner: int | None = None, folder: Path | None = None) -> int:
    """Remove hand-off files left behind: with ``owner`` (a coordinator ending its executor), those
    of that owner whose creating process has ended (a lane lost between writing a file and sending
    its handle; another executor's live lane in the same process keeps its files); without an
    owner, those whose owner process no longer exists (a coordinator that was killed). Returns
    how many were removed."""
    folder = shared_dir() if folder is None else folder
    if folder is None:
        return 0
    removed = 0
    try:
        names = [p for p in folder.iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return 0
    for path in names:
        try:
            pid, creator = (int(x) for x in path.name[len(PREFIX):].split("-", 2)[:2])
        except ValueError:
            continue
        if owner is None:
            left = not _alive(pid)  # its coordinator was killed
        else:
            left = pid == owner and not _alive(creator)  # its lane was lost before sending it
        if not left:
            continue
        try:
            path.unlink()
            removed += 1
        except OSError:  # another user's, or gone already
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


__all__ = ["HandOffLost", "MIN_BYTES", "Shipped", "set_owner", "shared_dir", "ship", "sweep"]
