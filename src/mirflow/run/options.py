"""Run options from ``mirflow.toml`` and command-line overrides, validated against the analyzer
registry before any work starts (unknown analyzers, bad parameter values)."""

from __future__ import annotations

from typing import Any

from .. import analyzers as registry
from ..core import devices
from ..core.config import Config, RunOptions
from ..core.errors import ConfigError
from .limits import parse_size

#: The analyzer that runs other analyzers on each stem; it gets their parameters from the run.
STEMS = "stems"


def default_analyzers() -> list[str]:
    """Every registered analyzer, in registration order."""
    return registry.available_names()


def _checked(requested: str) -> str:
    devices.parse(requested)  # spelling only: ConfigError for e.g. "tpu"
    return requested


def resolve_run_device(requested: str, analyzers: list[str],
                       instances: dict[str, Any] | None = None) -> str:
    """The run's device as PyTorch spells it (``cpu``, ``cuda:0``, ``mps``), resolved once here.

    The spelling is always checked. ``auto`` looks for an accelerator (importing PyTorch, seconds)
    only when the run holds an analyzer that prefers one and can run here (of ``instances``, the
    run's analyzers built with their parameters, those whose ``unavailable_reason()`` is None): a
    CPU-only run, or one whose GPU analyzers lack their models, resolves to ``cpu`` at no cost. A
    named accelerator is always looked up, so a device this machine lacks is an error before any
    work starts (:class:`ConfigError` listing what the machine has).
    """
    kind, _ = devices.parse(requested)
    if kind == "cpu":
        return "cpu"

    def wants_accelerator(name: str) -> bool:
        if registry.get(name).device != "gpu":
            return False
        return instances is None or name not in instances or not instances[name].unavailable_reason()

    if kind == "auto" and not any(wants_accelerator(n) for n in analyzers):
        return "cpu"
    return str(devices.resolve(requested))


def _with_stem_params(merged: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``stems`` parameters with ``params`` filled from the run's settings of each per-stem
    analyzer: ``--set spectral.rolloff_percent=0.9`` applies to the stems' spectral features too.
    Values set under ``stems.params`` explicitly win."""
    own = dict(merged.get(STEMS, {}))
    names = own.get("analyzers", registry.get(STEMS).defaults().get("analyzers", []))
    explicit = own.get("params") if isinstance(own.get("params"), dict) else {}
    if not isinstance(names, list):
        return own  # the stems analyzer reports the bad value itself
    sub: dict[str, dict[str, Any]] = {}
    for n in names:
        values = {**merged.get(n, {}), **(explicit.get(n) or {})}
        if values:
            sub[n] = values
    for n, values in explicit.items():
        sub.setdefault(n, values)
    if sub:
        own["params"] = sub
    return own


def build_options(cfg: Config, *, analyzers: list[str] | None = None, workers: int | None = None,
                  executor: str | None = None, device: str | None = None,
                  force: list[str] | None = None, retry_failed: bool = False,
                  chunk: int | None = None, ray_address: str | None = None,
                  params: dict[str, dict[str, Any]] | None = None,
                  track_timeout: float | None = None,
                  max_memory: str | float | None = None, limit: int | None = None,
                  cores: int | None = None, resolve_device: bool = True) -> RunOptions:
    """Merge the file configuration with command-line overrides (which win) into run options.

    Every analyzer named anywhere (the run, ``[analyzers.NAME]``, ``--set``) is constructed once
    with its parameters, so an unknown name or a bad value fails here, before any work starts, with
    one line naming the key, the value and what is allowed. The device is resolved here too;
    ``resolve_device=False`` (read-only callers such as ``status``, which start no analyzer) only
    checks its spelling and keeps it as given, so they never pay for importing PyTorch.
    """
    names = analyzers or cfg.run.analyzers or default_analyzers()
    for n in names:
        registry.get(n)
    for name in cfg.analyzers:
        registry.get(name)  # an unknown [analyzers.NAME] section is an error too
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in cfg.analyzers.items()}
    for name, values in (params or {}).items():
        registry.get(name)
        merged.setdefault(name, {}).update(values)
    order = registry.resolve_order(names)
    if STEMS in order:
        merged[STEMS] = _with_stem_params(merged)
    built = {name: registry.get(name)(**merged.get(name, {}))  # parameters outside the run too
             for name in dict.fromkeys([*order, *merged])}
    for name in order if resolve_device else ():  # an analyzer's own ``device``, like --device
        if "device" in registry.get(name).Params.model_fields and \
                merged.get(name, {}).get("device", "auto") != "auto":
            try:
                merged[name]["device"] = str(devices.resolve(merged[name]["device"]))
            except ConfigError as exc:
                raise ConfigError(f"{name}.device: {exc}") from None
    forced = set(force or [])
    if "all" in forced:
        forced = set(order)
    unknown = forced - set(order)
    if unknown:
        raise ConfigError(f"--force names analyzers not in this run: {', '.join(sorted(unknown))}")
    run = cfg.run
    chosen_executor = executor or run.executor
    if chosen_executor not in ("serial", "local", "ray"):
        raise ConfigError(f"unknown executor {chosen_executor!r} (serial, local or ray)")
    # the Ray executor resolves the device on each actor (the driver's machine may have no GPU)
    resolve_here = resolve_device and chosen_executor != "ray"
    chosen_workers = run.workers if workers is None else workers
    chosen_cores = _checked_cores(run.cores if cores is None else cores, chosen_workers, chosen_executor)
    return RunOptions(analyzers=names, params={k: v for k, v in merged.items() if k in order},
                      executor=chosen_executor, workers=chosen_workers, cores=chosen_cores,
                      device=(resolve_run_device(device or run.device, order, built) if resolve_here
                              else _checked(device or run.device)), force=frozenset(forced),
                      retry_failed=retry_failed, chunk=run.chunk if chunk is None else chunk,
                      ray_address=ray_address or run.ray_address,
                      track_timeout=run.track_timeout if track_timeout is None else track_timeout,
                      max_memory=parse_size(memory) if (memory := max_memory or run.max_memory) else 0.0,
                      explicit_analyzers=bool(analyzers or cfg.run.analyzers),
                      limit=_checked_limit(limit))


def _checked_cores(cores: int, workers: int, executor: str) -> int:
    """``--cores``: the local executor's core budget, at least one core per worker (0: one per
    worker, the default)."""
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 0:
        raise ConfigError(f"cores must be a whole number >= 1 (0: one per worker), got {cores!r}")
    if cores and executor != "local":
        raise ConfigError(f"cores (--cores) is the local executor's core budget; with --executor "
                          f"{executor} " + ("--workers bounds the CPU actors" if executor == "ray" else
                                            "everything runs in this one process"))
    if cores and workers > cores:
        raise ConfigError(f"--cores {cores} is fewer than --workers {workers}: every worker uses a "
                          f"core at least (give --cores {workers} or more, or fewer workers)")
    return cores


def _checked_limit(limit: int | None) -> int:
    """``--limit``: a positive number of tracks, or ``None``/0 for all of them."""
    if limit is None:
        return 0
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"limit must be a whole number of tracks >= 1 (0 or none: all), got {limit!r}")
    return limit
