"""Compile librosa's numba functions once, safely, before a worker analyses real tracks.

librosa caches its numba-compiled functions on disk (``cache=True``). When several worker
processes compile the same function for the first time at once they write the same cache files
concurrently, and a process can then load a torn cache entry and crash (seen here as a segmentation
fault in ``librosa.beat``'s beat tracker on the first parallel run of a fresh installation).
:func:`warm_up` runs an analyzer on a short synthetic song while holding a machine-wide file lock:
the first worker compiles and writes the cache, the others wait and then only read it. The same
code paths and dtypes as real tracks are exercised, so real tracks need no further compilation.

Once a warm-up has completed, a marker file beside the cache it filled records it (keyed by the
analyzer, librosa's version and install, numba's version and Python's): later worker processes
skip the synthetic song, since the cache only has to be read (a fraction of a second per worker
and analyzer of start-up saved). Deleting or invalidating the cache (a new librosa or numba, its
``__pycache__`` removed) removes or changes the marker, and the next worker warms up again. Where no
cache folder is known to be writable, every worker warms up as before.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)


def lock_path() -> Path:
    """The machine-wide lock (next to ``$NUMBA_CACHE_DIR`` when set, else in the temp folder)."""
    folder = os.environ.get("NUMBA_CACHE_DIR") or tempfile.gettempdir()
    return Path(folder) / "mirflow-numba-warmup.lock"


def marker_path(name: str) -> Path | None:
    """Where a completed warm-up of ``name`` is recorded: in ``$NUMBA_CACHE_DIR`` when set, else
    in librosa's own ``__pycache__`` (where numba caches librosa's functions); ``None`` when
    neither is known and writable (then every worker warms up)."""
    try:
        spec = importlib.util.find_spec("librosa")
        versions = (importlib.metadata.version("librosa"), importlib.metadata.version("numba"))
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        return None
    if spec is None or spec.origin is None:
        return None
    package = Path(spec.origin).parent
    folder = Path(os.environ["NUMBA_CACHE_DIR"]) if os.environ.get("NUMBA_CACHE_DIR") \
        else package / "__pycache__"
    try:
        stamp = os.stat(spec.origin).st_mtime_ns
    except OSError:
        return None
    if not (folder.is_dir() and os.access(folder, os.W_OK)):
        return None
    key = f"{name}|{versions}|{stamp}|{package}|{sys.version_info[:2]}"
    return folder / f"mirflow-warm-{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.ok"


def warm_up(name: str, run: Callable[[], object], *, timeout: float = 600.0) -> None:
    """Call ``run()`` (which exercises ``name``'s numba code) under the warm-up lock, unless a
    completed warm-up of the same code is recorded (see the module docstring)."""
    start = time.perf_counter()
    marker = marker_path(name)
    if marker is not None and marker.exists():
        log.debug("%s: numba cache already warm (%s)", name, marker.name)
        return
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout):
        run()
        if marker is not None:
            try:
                marker.write_text(f"{name} warmed up at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
            except OSError:
                pass
    log.debug("%s: numba warm-up took %.2f s", name, time.perf_counter() - start)


def warm_up_context():
    """A short synthetic song (drums, bass, chords at 120 BPM) in a context, for warm-up runs."""
    from .audio import TrackContext
    from .synth import synth_song

    return TrackContext.from_array(synth_song(bpm=120.0, seconds=6.0, sr=22050, seed=0), 22050,
                                   path="<warm-up>")
