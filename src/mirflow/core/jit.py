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

:func:`librosa` imports librosa for the analyzers with two changes to how its numba kernels are
built, not to what they compute:

- librosa declares its ufuncs and gufuncs with explicit signatures, which numba builds (from the
  disk cache, or compiling) when the module is imported: a dozen in the modules mirflow uses, 0.35 s
  of every worker's start-up, for a few that its analyzers call. Each is built on first use instead
  (:class:`LazyKernel`), under the same machine-wide lock.
- One kernel escapes the disk cache: ``librosa.beat`` (0.11) declares its local-score gufunc with
  ``cache=False``, so numba compiled it at every import of the module (2-3 s in every worker
  process, more than the rest of the beat tracker's start-up). It is cached like its neighbours,
  so a warm start loads it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


def lock_path() -> Path:
    """The machine-wide lock (next to ``$NUMBA_CACHE_DIR`` when set, else in the temp folder)."""
    folder = os.environ.get("NUMBA_CACHE_DIR") or tempfile.gettempdir()
    return Path(folder) / "mirflow-numba-warmup.lock"


def warm_marker(name: str, code: Callable[..., object]) -> Path:
    """The file that says ``name``'s warm-up completed with this installation: its name hashes
    the user, the Python version and the location, size and time of numba's and librosa's installed
    packages and of the module defining ``code`` (the analyzer's code, or a kernel's), so an
    upgrade, a new environment or an edited analyzer needs a locked warm-up again."""
    parts = [name, sys.version, str(getattr(os, "getuid", lambda: "")())]  # numba's cache may be per user
    files = [getattr(getattr(code, "__code__", None), "co_filename", "")]
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


@lru_cache(maxsize=None)
def _file_lock(path: str) -> FileLock:
    """One lock object per path and process, so that taking it again inside (a kernel built during
    a warm-up) is reentrant instead of a deadlock on the process's own lock."""
    return FileLock(path)


_UNLOCKED: set[str] = set()


@contextmanager
def compile_lock(what: str, *, timeout: float = 600.0) -> Iterator[None]:
    """Hold the machine-wide lock while ``what`` may write numba's cache. Where the lock cannot be
    created (NUMBA_CACHE_DIR not a folder) it warns and goes on without; a holder that keeps it
    longer than ``timeout`` s raises :class:`filelock.Timeout`."""
    path = lock_path()
    lock = _file_lock(str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=timeout)
    except Timeout:  # another process compiles for longer than ``timeout``: an error
        raise
    except OSError as exc:  # said once per process and place, not for every kernel
        (log.debug if str(path) in _UNLOCKED else log.warning)(
            "numba compilation of %s without the lock, which cannot be created at %s (%s); "
            "set NUMBA_CACHE_DIR to a writable folder", what, path, exc)
        _UNLOCKED.add(str(path))
        yield
        return
    try:
        yield
    finally:
        lock.release()


def warm_up(name: str, run: Callable[[], object], *, code: Callable[..., object] | None = None,
            timeout: float = 600.0) -> None:
    """Call ``run()`` (which exercises ``name``'s numba code, defined where ``code`` is, default
    ``run``) under the warm-up lock, or without it when an earlier warm-up of this installation
    completed (:func:`warm_marker`)."""
    start = time.perf_counter()
    marker = warm_marker(name, code or run)
    if marker.exists():
        run()
    else:
        with compile_lock(f"{name}'s warm-up", timeout=timeout):
            run()
            try:
                marker.touch()
            except OSError as exc:  # a read-only temp folder: warm up under the lock every time
                log.debug("cannot write %s (%s)", marker, exc)
    log.debug("%s: numba warm-up took %.2f s%s", name, time.perf_counter() - start,
              "" if marker.exists() else " (under the lock)")


def warm_up_context():
    """A short synthetic song (drums, bass, chords at 120 BPM) in a context, for warm-up runs."""
    from .audio import TrackContext
    from .synth import synth_song

    return TrackContext.from_array(synth_song(bpm=120.0, seconds=6.0, sr=22050, seed=0), 22050,
                                   path="<warm-up>")


#: The librosa modules mirflow's analyzers use, imported by :func:`librosa` with deferred kernels.
LIBROSA_MODULES = ("librosa.core", "librosa.util", "librosa.filters", "librosa.onset", "librosa.beat")
#: librosa modules whose signatures' annotations read ``scipy.stats`` (``rv_continuous``), which
#: workers defer (:data:`mirflow.core.imports.IN_WORKERS`): imported with annotations postponed.
LIBROSA_STATS_ANNOTATIONS = ("librosa.beat", "librosa.feature.rhythm")


class LazyKernel:
    """Stands for a numba ufunc or gufunc that a module declares with explicit signatures (which
    numba builds, from its disk cache or by compiling, when the module is imported) until the first
    use; it is built then, and everything is forwarded to it. Like a warm-up (:func:`warm_up`),
    the first build of an installation holds the machine-wide lock (it may write numba's cache),
    later ones do not (with the lock, two workers' builds took turns: 0.2 s of start-up).

    librosa 0.11 declares a dozen of them in the modules mirflow imports (zero crossings, local
    minima, phasors, ...); building them all took 0.35 s of every worker's start-up, and its
    analyzers call a few. numba cannot type one, so jitted code must not call it: librosa's call
    them from Python (``tests/test_jit.py`` checks every jitted function of those modules)."""

    def __init__(self, build: Callable[[], Any], func: Callable) -> None:
        self._build = build
        self._kernel: Any = None
        self._building = threading.Lock()  # analyzers side by side may call it first together
        self.__wrapped__ = func
        for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
            setattr(self, attr, getattr(func, attr, None))

    def kernel(self) -> Any:
        """The numba ufunc, built on the first call: under the lock until one build of this
        installation completed (:func:`warm_up`, keyed by the kernel's module), in parallel after."""
        if self._kernel is None:
            with self._building:
                if self._kernel is None:  # not built by the thread this one waited for
                    built: list[Any] = []
                    warm_up(f"{self.__module__}.{self.__name__}", lambda: built.append(self._build()),
                            code=self.__wrapped__)
                    self._kernel, self._build = built[0], None
        return self._kernel

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.kernel()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("_build", "_kernel", "_building"):  # not set yet (e.g. a copy being built)
            raise AttributeError(name)
        return getattr(self.kernel(), name)

    def __repr__(self) -> str:
        state = "built" if self._kernel is not None else "not built yet"
        return f"<LazyKernel {self.__module__}.{self.__name__} ({state})>"


def _deferring(decorator: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.vectorize`` or ``numba.guvectorize`` returning :class:`LazyKernel`\\ s, and with
    ``cache=False`` turned into ``cache=True`` (``librosa.beat``'s local score, see the module
    docstring; where numba cannot cache it, it is compiled as asked)."""
    def patched(*args: Any, **kwargs: Any) -> Any:
        if args and callable(args[0]) and not kwargs:  # bare ``@vectorize``: lazy already
            return decorator(*args)
        uncached = kwargs.get("cache") is False
        if uncached:
            kwargs = {**kwargs, "cache": True}

        def decorate(func: Callable) -> LazyKernel:
            def build() -> Any:
                try:
                    return decorator(*args, **kwargs)(func)
                except Exception as exc:  # noqa: BLE001 - e.g. no writable cache folder
                    if not uncached:
                        raise
                    log.debug("numba cannot cache %s (%s); compiling it uncached", func.__name__, exc)
                    return decorator(*args, **{**kwargs, "cache": False})(func)
            return LazyKernel(build, func)

        return decorate

    return patched


#: Held while :func:`librosa` imports librosa with numba's decorators patched.
_LIBROSA_IMPORT = threading.Lock()


def librosa() -> ModuleType:
    """``librosa``, with the modules mirflow's analyzers use (:data:`LIBROSA_MODULES`) imported
    once per process so that every numba ufunc they declare is a :class:`LazyKernel` (built on
    first use) and the one declared ``cache=False`` is cached on disk (module docstring), and
    with the annotations of :data:`LIBROSA_STATS_ANNOTATIONS` postponed, so that a deferred
    ``scipy.stats`` stays unloaded. Modules imported earlier by other code are left as they are.
    Call it inside :func:`warm_up` when several processes may import librosa at once (the cache
    files are written then)."""
    if all(name in sys.modules for name in LIBROSA_MODULES):
        return sys.modules["librosa"]
    with _LIBROSA_IMPORT:  # one thread patches numba's decorators at a time (analyzers side by side)
        if all(name in sys.modules for name in LIBROSA_MODULES):
            return sys.modules["librosa"]
        import numba

        from .imports import postponed_annotations

        originals = numba.vectorize, numba.guvectorize
        numba.vectorize, numba.guvectorize = (_deferring(d) for d in originals)
        try:
            with postponed_annotations(LIBROSA_STATS_ANNOTATIONS):
                for name in LIBROSA_MODULES:
                    importlib.import_module(name)
        finally:
            numba.vectorize, numba.guvectorize = originals
    return sys.modules["librosa"]
