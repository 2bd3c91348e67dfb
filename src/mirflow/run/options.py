"""Run options from ``mirflow.toml`` and command-line overrides, validated against the analyzer
registry before any work starts (unknown analyzers, bad parameter values)."""

from __future__ import annotations

from typing import Any

from .. import analyzers as registry
from ..core.config import Config, RunOptions
from ..core.errors import ConfigError


def default_analyzers() -> list[str]:
    """Every registered analyzer, in registration order."""
    return registry.available_names()


def build_options(cfg: Config, *, analyzers: list[str] | None = None, workers: int | None = None,
                  executor: str | None = None, device: str | None = None,
                  force: list[str] | None = None, retry_failed: bool = False,
                  chunk: int | None = None, ray_address: str | None = None,
                  params: dict[str, dict[str, Any]] | None = None) -> RunOptions:
    """Merge the file configuration with command-line overrides (which win) into run options.

    Analyzer parameters are checked by constructing each analyzer once, so a typo fails here,
    before any work starts.
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
    for name in order:
        registry.get(name)(**merged.get(name, {}))
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
    return RunOptions(analyzers=names, params={k: v for k, v in merged.items() if k in order},
                      executor=chosen_executor, workers=run.workers if workers is None else workers,
                      device=device or run.device, force=frozenset(forced),
                      retry_failed=retry_failed, chunk=run.chunk if chunk is None else chunk,
                      ray_address=ray_address or run.ray_address)
