"""Keeping command-line analyzer parameters: ``mirflow run --save-config``.

Parameters given with ``--set`` (or a convenience flag such as ``--sep-shifts``) apply to one run.
Their hash is stored in each sidecar record, so the next plain ``mirflow run`` (which uses
``mirflow.toml`` and the defaults) sees different parameters and recomputes those analyzers with
the old values. :func:`reverted_by_plain_run` finds the parameters that would be reverted, so the
command line can warn; :func:`save_params` writes them into ``[analyzers.NAME]`` of the
configuration file, keeping its comments and layout (tomlkit).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import analyzers as registry
from ..core.config import Config
from ..core.fsutil import atomic_write_bytes


def reverted_by_plain_run(cfg: Config, given: dict[str, dict[str, Any]],
                          ) -> dict[str, dict[str, tuple[Any, Any]]]:
    """``{analyzer: {param: (given, plain)}}`` for every parameter in ``given`` whose value differs
    from what a run without it would use (``mirflow.toml``, else the analyzer's default)."""
    out: dict[str, dict[str, tuple[Any, Any]]] = {}
    for name, values in given.items():
        defaults = registry.get(name).defaults()
        configured = cfg.analyzers.get(name, {})
        for param, value in values.items():
            plain = configured.get(param, defaults.get(param))
            if _norm(plain) != _norm(value):
                out.setdefault(name, {})[param] = (value, plain)
    return out


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def save_params(path: str | os.PathLike[str], params: dict[str, dict[str, Any]]) -> Path:
    """Set ``params`` in ``[analyzers.NAME]`` of the TOML file at ``path`` (created if missing),
    keeping everything else in it, comments included. Written atomically."""
    import tomlkit

    p = Path(path)
    doc = tomlkit.parse(p.read_text(encoding="utf-8")) if p.is_file() else tomlkit.document()
    if "analyzers" not in doc:
        doc["analyzers"] = tomlkit.table(is_super_table=True)
    section = doc["analyzers"]
    for name, values in params.items():
        if name not in section:
            section[name] = tomlkit.table()
        for param, value in values.items():
            section[name][param] = list(value) if isinstance(value, tuple) else value
    atomic_write_bytes(p, tomlkit.dumps(doc).encode("utf-8"))
    return p


__all__ = ["reverted_by_plain_run", "save_params"]
