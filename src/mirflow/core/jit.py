"""Compile librosa's numba functions once, safely, before a worker analyses real tracks.

librosa caches its numba-compiled functions on disk (``cache=True``). When several worker
processes compile the same function for the first time at once they write the same cache files
concurrently, and a process can then load a torn cache entry and crash (seen here as a segmentation
fault in ``librosa.beat``'s beat tracker on the first parallel run of a fresh installation).
:func:`warm_up` runs an analyzer on a short synthetic song while holding a machine-wide file lock:
the first worker compiles and writes the cache, the others wait and then only read it. The same
code paths and dtypes as real tracks are exercised, so real tracks need no further compilation.
A warm-up that completed leaves a marker, keyed by the installed numba and librosa and the
analyzer's code; while it is there the cache is warm (loading it writes nothing), so later
workers warm up at once, in parallel, without the lock: with the lock, a run's workers imported
librosa one after another (the first result of a 2-worker run came after both).

One librosa kernel escapes the disk cache: ``librosa.beat`` (0.11) declares its local-score gufunc
with ``cache=False`` and explicit signatures, so numba compiles it at every import of the module
(2-3 s in every worker process, more than the rest of the beat tracker's start-up). :func:`librosa_beat`
imports the module with that one declaration cached like its neighbours, so a warm start loads it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


def lock_path() -> Path:
    """The machine-wide lock (next to ``$NUMBA_CACHE_DIR`` when set, else in the temp folder)."""
    folder = os.environ.get("NUMBA_CACHE_DIR") or tempfile.gettempdir()
    return Path(folder) / "mirflow-numba-warmup.lock"


def warm_marker(name: str, run: Callable[[], object]) -> Path:
    """The file that says ``name``'s warm-up completed with this installation: its name hashes
    the user, the Python version and the location, size and time of numba's and librosa's installed
    packages and of the module defining ``run`` (the analyzer's code), so an upgrade, a new
    environment or an edited analyzer needs a locked warm-up again."""
    parts = [name, sys.version, str(getattr(os, "getuid", lambda: "")())]  # numba's cache may be per user
    files = [getattr(getattr(run, "__code__", None), "co_filename", "")]
    for package in ("numba", "librosa"):
        spec = importlib.util.find_spec(package)
        files.append(spec.origin if spec and spec.origin else "")
    for file in files:
        try:
            st = os.stat(file)
            parts += [file, str(st.st_size), str(st.st_mtime_ns)]
        except OSError:
            parts += [file, "-"]
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return lock_path().with_name(f"mirflow-numba-warm-{name}-{digest}")


def warm_up(name: str, run: Callable[[], object], *, timeout: float = 600.0) -> None:
    """Call ``run()`` (which exercises ``name``'s numba code) under the warm-up lock, or without
    it when an earlier warm-up of this installation completed (:func:`warm_marker`)."""
    start = time.perf_counter()
    path = lock_path()
    marker = warm_marker(name, run)
    if marker.exists():
        run()
    else:
        lock = FileLock(str(path), timeout=timeout)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:  # another process compiles for longer than ``timeout``: an error
            raise
        except OSError as exc:
            log.warning("numba warm-up of %s without the lock, which cannot be created at %s (%s); "
                        "set NUMBA_CACHE_DIR to a writable folder", name, path, exc)
            run()
            return
        try:
            run()
            try:
                marker.touch()
            except OSError as exc:  # a read-only temp folder: warm up under the lock every time
                log.debug("cannot write %s (%s)", marker, exc)
        finally:
            lock.release()
    log.debug("%s: numba warm-up took %.2f s%s", name, time.perf_counter() - start,
              "" if marker.exists() else " (under the lock)")


def warm_up_context():
    """A short synthetic song (drums, bass, chords at 120 BPM) in a context, for warm-up runs."""
    from .audio import TrackContext
    from .synth import synth_song

    return TrackContext.from_array(synth_song(bpm=120.0, seconds=6.0, sr=22050, seed=0), 22050,
                                   path="<warm-up>")


def librosa_beat() -> ModuleType:
    """``librosa.beat``, imported (once per process) with every numba gufunc it declares with
    ``cache=False`` compiled with numba's disk cache instead: the same code, compiled once per
    installation and loaded from the cache afterwards (see the module docstring). A numba that
    cannot cache such a function compiles it as librosa asked. Call it inside :func:`warm_up` when
    several processes may import librosa at once (the cache files are written then)."""
    if "librosa.beat" in sys.modules:
        return sys.modules["librosa.beat"]
    import numba

    original = numba.guvectorize

    def cached_guvectorize(*args: Any, **kwargs: Any) -> Callable[[Callable], Any]:
        if kwargs.get("cache") is not False:
            return original(*args, **kwargs)
        cached, plain = original(*args, **{**kwargs, "cache": True}), original(*args, **kwargs)

        def decorate(func: Callable) -> Any:
            try:
                return cached(func)
            except Exception as exc:  # noqa: BLE001 - e.g. no writable cache folder
                log.debug("numba cannot cache %s (%s); compiling it uncached", func.__name__, exc)
                return plain(func)

        return decorate

    numba.guvectorize = cached_guvectorize
    try:
        import librosa.beat
    finally:
        numba.guvectorize = original
    return librosa.beat
