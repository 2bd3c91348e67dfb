"""Analyzer registry: every analyzer registers itself by name.

Adding a feature means adding one module with an :class:`~mirflow.analyzers.base.Analyzer`
subclass decorated with :func:`register`, and listing the module in ``_BUILTIN_MODULES``; the engine,
resume, locking, export and CLI need no change.

Analyzers from other packages are found through the ``mirflow.analyzers`` entry-point group, or
by naming their modules in ``$MIRFLOW_PLUGINS`` (comma-separated module names); importing the
module must register the analyzer.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from importlib.metadata import entry_points

import logging

from ..core.errors import ConfigError
from .base import Analyzer

log = logging.getLogger(__name__)

_REGISTRY: dict[str, type[Analyzer]] = {}

#: Modules holding the built-in analyzers, imported on first registry use.
_BUILTIN_MODULES = (
    "separation",
    "loudness",
    "spectral",
    "tonal",
    "rhythm",
    "classifiers",
    "stems",
)
_loaded = False


def register(cls: type[Analyzer]) -> type[Analyzer]:
    """Class decorator: add ``cls`` to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"analyzer name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _BUILTIN_MODULES:
            try:
                importlib.import_module(f"{__name__}.{mod}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{mod}":
                    raise
                log.error("built-in analyzer module %s is missing from this installation", mod)
        for ep in entry_points(group="mirflow.analyzers"):
            ep.load()
        for mod in filter(None, (m.strip() for m in os.environ.get("MIRFLOW_PLUGINS", "").split(","))):
            try:
                importlib.import_module(mod)
            except ImportError as exc:
                raise ConfigError(f"cannot import analyzer plugin {mod!r} from MIRFLOW_PLUGINS: {exc}") from exc


def available_names() -> list[str]:
    """Names of all registered analyzers, in registration order."""
    _load_builtins()
    return list(_REGISTRY)


def get(name: str) -> type[Analyzer]:
    """The analyzer class registered as ``name`` (raises :class:`ConfigError` if unknown)."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown analyzer {name!r}; known: {', '.join(_REGISTRY)}") from None


def resolve_order(names: Iterable[str]) -> list[str]:
    """``names`` plus the analyzers they require, sorted so that requirements (``requires``) and
    predecessors present in the run (``after``) come first."""
    _load_builtins()
    selected: list[str] = []

    def add(name: str) -> None:
        if name not in selected:
            cls = get(name)
            selected.append(name)
            for dep in cls.requires:
                add(dep)

    for n in names:
        add(n)
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ConfigError(f"analyzer dependency cycle through {name!r}")
        visiting.add(name)
        cls = get(name)
        for dep in (*cls.requires, *(a for a in cls.after if a in selected)):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for n in selected:
        visit(n)
    return order


__all__ = ["Analyzer", "register", "get", "available_names", "resolve_order"]
