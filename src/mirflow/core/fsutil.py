"""Atomic file writes: outputs appear whole or not at all.

Write to a temporary file in the destination's folder (so the rename cannot cross file systems),
flush and fsync it, ``os.replace`` it over the destination, then fsync the folder so the rename
itself survives a power cut. :func:`atomic_write_bytes` does it for bytes in memory,
:func:`atomic_path` for writers that take a file name (pyarrow, soundfile, a child process).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Prefix of every temporary file mirflow writes (sidecars, stems, model files): dataset discovery
#: ignores such files and a track lease deletes stale ones. Defined here, the one place that names it.
TMP_PREFIX = ".mirflow-tmp-"


def fsync_dir(folder: Path) -> None:
    """fsync a folder (makes a rename durable); a no-op where the file system refuses it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and Windows) refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask: from ``/proc/self/status`` where the kernel reports it (Linux 4.7+), else
    by setting and restoring it (a short window in which another thread could create a file)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; on any error the old file is left as it was.

    The file gets the mode a plain ``open()`` would give it (``0o666`` minus the umask, e.g. 0644
    under umask 022), not ``mkstemp``'s private 0600: other users of a shared dataset can read it.
    """
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, 0o666 & ~current_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file name to write ``path`` through, for writers that take a file name.

    Yields ``<folder>/.mirflow-tmp-XXXX.part<suffix>`` beside ``path`` (same suffix, so writers
    that choose the format from it, such as soundfile, still do). When the block ends normally the
    file is fsynced, given the mode a plain ``open()`` would give it, renamed over ``path`` and the
    folder fsynced; when it raises, the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp.name} for {path.name}")
        os.chmod(tmp, 0o666 & ~current_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
