"""Deferred imports: a module whose code runs when one of its attributes is first used.

A worker's start-up is mostly imports (see ``benchmarks/startup.py``). librosa imports
``scipy.signal`` (which imports ``scipy.stats``) at the top of several of its modules, 0.6-0.7 s
on a quiet 2-core machine, yet the functions mirflow calls never touch either package (its own
filters and windows avoid them: ``core.audio.periodic_hann``, the loudness K-weighting).
:func:`defer` puts such a package in ``sys.modules`` unexecuted: ``import scipy.signal`` statements
succeed at once, and the package's code runs, in place, on the first real use of any attribute, so
anything that does use it (a user's analyzer, a fallback path) gets the complete module, only later.

Unlike :class:`importlib.util.LazyLoader`, the module answers the attributes the import system
reads (``__spec__``, ``__name__``, ``__loader__``) without loading: with ``LazyLoader`` the very
``import`` statement that follows loads the package (CPython reads ``__spec__`` to check that the
module is initialised), so nothing is deferred.
"""

from __future__ import annotations

import __future__
import importlib.machinery
import importlib.util
import logging
import sys
import threading
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

#: Attributes answered without running the module: the ones the import system reads when an
#: ``import`` statement finds the module in ``sys.modules``, and the file names that scans of
#: ``sys.modules`` read (``inspect.getmodule``, which librosa reaches through ``lazy_loader``).
#: ``__path__`` is not among them, so importing a submodule runs the package first, as a plain
#: import would.
_METADATA = frozenset({"__spec__", "__name__", "__loader__", "__package__", "__file__",
                       "__cached__", "__class__"})


#: Deferred in every worker process before the analyzers are imported: SciPy packages that
#: librosa imports at the top of its modules and mirflow's analyzers never call (``scipy.stats``
#: alone, with what it imports, is 0.6 s). ``librosa.beat`` and ``librosa.feature.rhythm`` read
#: ``scipy.stats.rv_continuous`` in annotations; :func:`mirflow.core.jit.librosa` imports them
#: with annotations postponed (:func:`postponed_annotations`), so that reads nothing.
IN_WORKERS = ("scipy.signal", "scipy.stats", "scipy.interpolate", "scipy.optimize")


class DeferredModule(types.ModuleType):
    """A module created from its spec but not executed yet (see :func:`defer`)."""

    def __getattribute__(self, attr: str) -> object:
        if attr not in _METADATA:
            load(self)
        return types.ModuleType.__getattribute__(self, attr)

    def __setattr__(self, attr: str, value: object) -> None:
        if attr != "__class__":
            load(self)  # e.g. a submodule bound on its package: the package runs first
        types.ModuleType.__setattr__(self, attr, value)

    def __dir__(self) -> list[str]:
        load(self)
        return types.ModuleType.__dir__(self)


class _Loading:
    """One deferred module's state: a lock, so that a second thread waits while the first runs
    the module's code, and whether that is under way (then the running thread, whose nested
    imports read and bind the module's attributes, sees a plain module)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.running = False


_LOADING: dict[str, _Loading] = {}


def load(module: types.ModuleType) -> types.ModuleType:
    """Run a deferred module's code now, in place (a no-op for any other module). On failure it is
    removed from ``sys.modules``, as a failed import leaves it, and the error is raised."""
    if type(module) is not DeferredModule:
        return module
    spec = types.ModuleType.__getattribute__(module, "__spec__")
    state = _LOADING.setdefault(spec.name, _Loading())
    with state.lock:
        if type(module) is not DeferredModule or state.running:
            return module  # run by another thread meanwhile, or by this one right now
        state.running = True
        log.debug("running deferred module %s", spec.name)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            if sys.modules.get(spec.name) is module:
                del sys.modules[spec.name]
            raise
        finally:
            state.running = False
            module.__class__ = types.ModuleType  # from here on a plain module
    return module


def imported(name: str) -> bool:
    """Whether ``name`` is in ``sys.modules`` and has run (a deferred module has not)."""
    module = sys.modules.get(name)
    return module is not None and type(module) is not DeferredModule


def defer(name: str) -> types.ModuleType | None:
    """Put ``name`` in ``sys.modules`` without running it; its code runs on first attribute use.

    Returns the module, or ``None`` when there is nothing to defer: already imported (then it is
    left as it is) or not installed (a later import fails as it would have). Parent packages are
    imported now (``scipy`` itself is light: it loads its subpackages lazily)."""
    if name in sys.modules:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
        return None
    module = importlib.util.module_from_spec(spec)
    module.__class__ = DeferredModule
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


class _PostponedAnnotationsLoader(importlib.machinery.SourceFileLoader):
    """Compiles a module as if it began with ``from __future__ import annotations`` (PEP 563).
    Its bytecode is not written to, nor read from, ``__pycache__``, which belongs to the normal
    compilation of the installed file."""

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        return compile(self.get_data(path), path, "exec", dont_inherit=True,
                       flags=__future__.annotations.compiler_flag)


class _PostponedAnnotationsFinder:
    """A meta path finder (``find_spec`` is all the import system asks of one)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, name: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)  # type: ignore[arg-type]
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None  # not a plain source file: imported as usual
        spec.loader = _PostponedAnnotationsLoader(name, spec.origin)
        return spec


@contextmanager
def postponed_annotations(names: Iterable[str]) -> Iterator[None]:
    """While inside, the modules ``names`` (when first imported, from source files) are compiled
    with their annotations postponed (PEP 563): a function's annotations are kept as strings
    instead of being evaluated when it is defined (``__annotations__`` holds the strings). Nothing
    else about the code changes. Used where an annotation alone would load a
    deferred module (``Optional[scipy.stats.rv_continuous]`` in librosa's signatures)."""
    finder = _PostponedAnnotationsFinder(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
