"""The Python API behind ``mirflow.analyze``, ``mirflow.run``, ``mirflow.load`` and friends.

These are thin functions over the same machinery as the command line: :func:`analyze` runs the
analyzers through a :class:`~mirflow.run.worker.Worker` on one
:class:`~mirflow.core.audio.TrackContext` (one decode, one STFT shared by every feature), and
:func:`run` is the coordinator the ``mirflow run`` command calls. Nothing here prints.

Analyzers used by :func:`analyze` are built and set up once per process and per configuration
(analyzer names, parameters, device) and reused by later calls, so a notebook loop over many files
loads each model once; :func:`close` releases them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.errors import AnalysisError, ConfigError, DatasetError, ModelUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .run.coordinator import DatasetStatus, RunSummary
    from .run.worker import Worker

#: Analyzers :func:`analyze` runs when none are named (classifiers too when their models are here).
DEFAULT_ANALYZERS = ("loudness", "spectral", "tonal", "rhythm")
#: Analyzers that read or write files next to a track (stems): they need a dataset, see :func:`run`.
DATASET_ONLY = frozenset({"separation", "stems"})

_workers: dict[str, "Worker"] = {}
_workers_lock = threading.Lock()


def analyze(source: str | os.PathLike[str] | np.ndarray, sr: int | None = None, *,
            analyzers: Iterable[str] | None = None,
            params: Mapping[str, Mapping[str, Any]] | None = None,
            device: str = "auto") -> dict[str, Any]:
    """Analyse one audio file or one signal in memory; no dataset folder needed.

    Parameters
    ----------
    source : path or numpy.ndarray
        An audio file (any format mirflow decodes), or samples: ``(samples,)`` mono or
        ``(channels, samples)``, float, full scale 1.0.
    sr : int, optional
        Sample rate of ``source`` in Hz; required for an array, not allowed for a file.
    analyzers : iterable of str, optional
        Analyzer names (default: loudness, spectral, tonal, rhythm, and classifiers when their
        models are installed). ``separation`` and ``stems`` work on dataset folders: use :func:`run`.
    params : mapping, optional
        Analyzer parameters, ``{"tonal": {"profile": "temperley"}}`` (validated as ``--set`` is).
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` for analyzers that use a model.

    Returns
    -------
    dict
        ``duration_s`` (s), ``sample_rate`` (Hz), ``channels`` and the flat feature keys the
        analyzers return (the same keys and units as in a sidecar, e.g. ``lufs``, ``bpm``, ``key``).

    Raises
    ------
    DecodeError
        The file cannot be decoded.
    ConfigError
        Unknown analyzer, bad parameter, ``sr`` missing for an array or given for a file.
    ModelUnavailableError
        A named analyzer cannot run here (e.g. a classifier model is not installed).
    AnalysisError
        An analyzer failed on this audio; ``exc.partial`` holds what the others computed.
    """
    from .core.audio import TrackContext
    from .core.dataset import Track
    from .run.worker import WorkUnit

    names = _analyzer_names(analyzers)
    settings = {n: dict((params or {}).get(n, {})) for n in names}
    unknown = set(params or {}) - set(names)
    if unknown:
        raise ConfigError(f"params given for analyzers not run: {', '.join(sorted(unknown))}")
    worker = _worker(names, settings, device)

    if isinstance(source, np.ndarray):
        if sr is None:
            raise ConfigError("analyze(array) needs sr=<sample rate in Hz>")
        if source.ndim not in (1, 2) or source.size == 0:
            raise ConfigError(f"expected a (samples,) or (channels, samples) array, got shape {source.shape}")
        ctx = TrackContext.from_array(source, int(sr))
        where = Path("<memory>")
        track = Track(dir=where, mix=where)
    else:
        if sr is not None:
            raise ConfigError("sr is read from the file; pass sr only with an array")
        path = Path(source)
        ctx = TrackContext(path)
        track = Track(dir=path.parent, mix=path)
    audio = ctx.audio  # decode once, up front: a DecodeError is raised as itself
    results = worker.process([WorkUnit(track, tuple(worker.order))], [ctx])[0]
    out: dict[str, Any] = {"duration_s": audio.duration, "sample_rate": audio.sr,
                           "channels": audio.channels}
    errors = []
    for name in worker.order:
        res = results.get(name)
        if res is None:
            continue
        if res.status == "ok":
            out.update(res.features)
        else:
            errors.append(f"{name}: {res.error or res.note}")
    if errors:
        exc = AnalysisError("; ".join(errors))
        exc.partial = out  # type: ignore[attr-defined]
        raise exc
    return out


def _analyzer_names(analyzers: Iterable[str] | None) -> list[str]:
    from . import analyzers as registry

    explicit = analyzers is not None
    if isinstance(analyzers, str):
        analyzers = [a.strip() for a in analyzers.split(",") if a.strip()]
    names = list(analyzers) if analyzers is not None else [*DEFAULT_ANALYZERS, "classifiers"]
    order = registry.resolve_order(names)
    bad = DATASET_ONLY.intersection(order)
    if bad:
        raise ConfigError(f"{', '.join(sorted(bad))} work on track folders (stems are files): "
                          "use mirflow.run(dataset) and mirflow.load(dataset, stems=True)")
    chosen = []
    for name in order:
        reason = registry.get(name)().unavailable_reason()
        if reason is None:
            chosen.append(name)
        elif explicit:
            raise ModelUnavailableError(f"{name} cannot run here: {reason}")
    return chosen


def _worker(names: list[str], settings: dict[str, dict[str, Any]], device: str) -> "Worker":
    from . import analyzers as registry
    from .run.worker import AnalyzerSpec, Worker

    for n in names:  # validate parameters now, with the analyzer's own message
        registry.get(n)(**settings[n])
    key = json.dumps([names, settings, device], sort_keys=True, default=str)
    with _workers_lock:
        worker = _workers.get(key)
        if worker is None:
            worker = Worker([AnalyzerSpec(n, settings[n]) for n in names], device=device)
            _workers[key] = worker
    return worker


def close() -> None:
    """Release the analyzers (models) :func:`analyze` keeps for reuse in this process."""
    with _workers_lock:
        workers = list(_workers.values())
        _workers.clear()
    for w in workers:
        w.close()


def _options(dataset: Path, config: str | os.PathLike[str] | None, **kw: Any):
    from .core import config as cfgmod
    from .run.options import build_options

    if not dataset.is_dir():
        raise DatasetError(f"dataset {dataset} does not exist or is not a folder")
    cfg = cfgmod.load(cfgmod.find_config(dataset, Path(config) if config else None))
    return build_options(cfg, **kw)


def run(dataset: str | os.PathLike[str], *, analyzers: Iterable[str] | None = None,
        workers: int | None = None, executor: str | None = None, device: str | None = None,
        force: Iterable[str] | None = None, retry_failed: bool = False,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        config: str | os.PathLike[str] | None = None,
        progress: Callable[..., None] | None = None, limit: int | None = None,
        cores: int | None = None) -> "RunSummary":
    """Analyse every track of ``dataset`` that has something due, as ``mirflow run`` does.

    Options default to ``DATASET/mirflow.toml`` (or ``config``), then to mirflow's defaults.
    ``limit``: at most this many of the due tracks, spread evenly over the dataset (``--limit``).
    ``cores``: the CPU cores the local workers share (``--cores``; default one per worker).
    ``progress(event, **data)`` is called with ``plan``, ``track`` and ``stopping`` events.
    Returns the :class:`~mirflow.run.coordinator.RunSummary` (counts per analyzer, failures).
    """
    from .run.coordinator import run as run_dataset

    root = Path(dataset)
    options = _options(root, config, analyzers=list(analyzers) if analyzers else None,
                       workers=workers, cores=cores, executor=executor, device=device,
                       force=list(force) if force else None, retry_failed=retry_failed,
                       params={k: dict(v) for k, v in (params or {}).items()}, limit=limit)
    return run_dataset(root, options, progress=progress)


def status(dataset: str | os.PathLike[str], *, analyzers: Iterable[str] | None = None,
           params: Mapping[str, Mapping[str, Any]] | None = None,
           config: str | os.PathLike[str] | None = None) -> "DatasetStatus":
    """What a run would do (done / due / failed / blocked / unavailable per analyzer); read-only."""
    from .run.coordinator import status as dataset_status

    root = Path(dataset)
    options = _options(root, config, analyzers=list(analyzers) if analyzers else None,
                       params={k: dict(v) for k, v in (params or {}).items()},
                       resolve_device=False)  # read-only: no analyzer runs, no torch import
    return dataset_status(root, options)


def load(dataset: str | os.PathLike[str], *, stems: bool = False, probe: bool = True) -> "pd.DataFrame":
    """The results of ``dataset`` as a pandas DataFrame.

    One row per track (columns as in ``mirflow export``: ``track``, ``path``, ``duration_s``,
    ``sample_rate``, ``channels``, ``codec``, the features, ``failed``), or with ``stems=True`` one
    row per track and stem (``track``, ``stem``, ``path``, per-stem features without the
    ``<stem>_`` prefix). ``dataset`` may also be a ``.parquet`` file written by ``mirflow export``.
    The provenance (versions, parameters, dataset root) is in ``df.attrs["mirflow"]``.
    ``probe=False`` skips reading the audio file headers (no duration/sample rate/codec columns).
    """
    from .results.export import read_metadata
    from .results.table import collect, to_arrow

    path = Path(dataset)
    if path.is_file() and path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        df = pq.read_table(path).to_pandas()
        df.attrs["mirflow"] = read_metadata(path)
        return df
    if not path.is_dir():
        raise DatasetError(f"dataset {path} does not exist or is not a folder")
    rs = collect(path, probe=probe)
    rows, columns = (rs.stems, rs.stem_columns) if stems else (rs.tracks, rs.track_columns)
    df = to_arrow(rows, columns).to_pandas()
    df.attrs["mirflow"] = rs.provenance
    return df


def export(dataset: str | os.PathLike[str], output: str | os.PathLike[str], *,
           stems: bool = False) -> int:
    """Write the results as ``.parquet``, ``.csv`` or ``.jsonl``; returns the number of rows."""
    from .results.export import export as export_table

    return export_table(dataset, output, stems=stems)


def report(dataset: str | os.PathLike[str], output: str | os.PathLike[str], **kw: Any) -> Path:
    """Write the self-contained HTML report of ``dataset`` (see :mod:`mirflow.results.report`)."""
    from .results.report import write_report

    return write_report(dataset, output, **kw)


__all__ = ["DEFAULT_ANALYZERS", "analyze", "close", "export", "load", "report", "run", "status"]
