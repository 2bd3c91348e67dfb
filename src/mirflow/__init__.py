"""mirflow: analyse music collections at dataset scale.

The public API (stable; everything else is internal and may move)::

    import mirflow

    features = mirflow.analyze("song.flac")                 # one file or a numpy signal, no dataset
    summary = mirflow.run("my-dataset", analyzers=["loudness", "rhythm"])
    df = mirflow.load("my-dataset")                         # pandas, one row per track
    stems = mirflow.load("my-dataset", stems=True)          # one row per track and stem
    mirflow.export("my-dataset", "features.parquet")
    mirflow.report("my-dataset", "report.html")

Importing mirflow is cheap: the functions and their dependencies (librosa, pyarrow, pandas, ...)
are imported on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would double the import time
if TYPE_CHECKING:  # pragma: no cover
    import os
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

    from .api import analyze, close, export, load, report, status
    from .core.errors import (AnalysisError, ConfigError, DatasetError, DecodeError, MirflowError,
                              ModelUnavailableError)
    from .run.coordinator import DatasetStatus, RunSummary

#: Public name -> the module that defines it (imported lazily by :func:`__getattr__`).
_LAZY = {
    "analyze": "mirflow.api", "load": "mirflow.api",
    "export": "mirflow.api", "report": "mirflow.api", "status": "mirflow.api",
    "close": "mirflow.api",
    "RunSummary": "mirflow.run.coordinator", "DatasetStatus": "mirflow.run.coordinator",
    "MirflowError": "mirflow.core.errors", "DecodeError": "mirflow.core.errors",
    "ConfigError": "mirflow.core.errors", "DatasetError": "mirflow.core.errors",
    "AnalysisError": "mirflow.core.errors", "ModelUnavailableError": "mirflow.core.errors",
}

__all__ = ["__version__", "analyze", "run", "load", "export", "report", "status", "close",
           "RunSummary", "DatasetStatus", "MirflowError", "DecodeError", "ConfigError",
           "DatasetError", "AnalysisError", "ModelUnavailableError"]


# The subpackage ``mirflow.run`` (planner, worker, coordinator) shares its name with the function
# ``mirflow.run``. Loading the subpackage first (it is a docstring only) and binding the function
# afterwards keeps ``mirflow.run`` the function; reach the subpackage with ``from mirflow.run import
# coordinator`` or ``importlib.import_module("mirflow.run.coordinator")``.
from . import run as _run_package  # noqa: E402,F401


def run(dataset: "str | os.PathLike[str]", *, analyzers: "Iterable[str] | None" = None,
        workers: "int | None" = None, executor: "str | None" = None, device: "str | None" = None,
        force: "Iterable[str] | None" = None, retry_failed: bool = False,
        params: "Mapping[str, Mapping[str, Any]] | None" = None,
        config: "str | os.PathLike[str] | None" = None,
        progress: "Callable[..., None] | None" = None) -> "RunSummary":
    """Analyse every track of ``dataset`` that has something due (as ``mirflow run`` does) and
    return the :class:`RunSummary`; options default to ``DATASET/mirflow.toml``. See
    :func:`mirflow.api.run`."""
    from .api import run as _run

    return _run(dataset, analyzers=analyzers, workers=workers, executor=executor, device=device,
                force=force, retry_failed=retry_failed, params=params, config=config,
                progress=progress)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mirflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
