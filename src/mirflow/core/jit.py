"""Compile librosa's numba functions once, safely, before a worker analyses real tracks.

librosa caches its numba-compiled functions on disk (``cache=True``). When several worker
processes compile the same function for the first time at once they write the same cache files
concurrently, and a process can then load a torn cache entry and crash (seen here as a segmentation
fault in ``librosa.beat``'s beat tracker on the first parallel run of a fresh installation).
:func:`warm_up` runs an analyzer on a short synthetic song while holding a machine-wide file lock:
the first worker compiles and writes the cache, the others wait and then only read it. The same
code paths and dtypes as real tracks are exercised, so real tracks need no further compilation.
"""

from __future__ import annotations

import logging
import os
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


def warm_up(name: str, run: Callable[[], object], *, timeout: float = 600.0) -> None:
    """Call ``run()`` (which exercises ``name``'s numba code) under the warm-up lock."""
    start = time.perf_counter()
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout):
        run()
    log.debug("%s: numba warm-up took %.2f s", name, time.perf_counter() - start)


def warm_up_context():
    """A short synthetic song (drums, bass, chords at 120 BPM) in a context, for warm-up runs."""
    from .audio import TrackContext
    from .synth import synth_song

    return TrackContext.from_array(synth_song(bpm=120.0, seconds=6.0, sr=22050, seed=0), 22050,
                                   path="<warm-up>")
