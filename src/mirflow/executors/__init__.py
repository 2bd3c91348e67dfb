"""Executors run work units; they know nothing of what analyzers compute.

Every executor offers the same small interface (:class:`Executor`): ``submit`` a chunk of work
units and get a :class:`concurrent.futures.Future` of their results, ``capacity`` chunks in flight
at once, and ``shutdown``. The coordinator (:mod:`mirflow.run.coordinator`) holds the track leases and writes
the sidecars, so an executor only computes. A worker's death or a track over its time limit is a
failure of that track only, recorded in its results (:mod:`mirflow.executors.supervisor`).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol

from ..run.worker import AnalyzerSpec, WorkUnit
from ..core.errors import ConfigError
from ..core.sidecar import AnalyzerResult

EXECUTORS = ("serial", "local", "ray")


class Executor(Protocol):
    capacity: int
    #: Analyzers whose model one process holds for every track (the local GPU lane's, the serial
    #: executor's): ``--max-memory`` counts their models once for the run, the others' per track.
    models_held_once: frozenset[str]
    #: Analyzers whose model each of the executor's ``workers`` processes keeps once it ran them
    #: (the local executor's CPU workers): counted once per worker, busy or idle, not per track.
    models_per_worker: frozenset[str]
    workers: int

    def submit(self, units: list[WorkUnit]) -> "Future[list[dict[str, AnalyzerResult]]]": ...

    def shutdown(self, *, cancel: bool = False) -> None: ...


def make_executor(kind: str, specs: list[AnalyzerSpec], *, workers: int, device: str,
                  ray_address: str | None = None, memory_budget: float = 0.0,
                  cores: int | None = None, due: frozenset[str] | None = None,
                  fit_workers: bool = False) -> Executor:
    """Build the executor named ``kind`` (``serial``, ``local`` or ``ray``). ``memory_budget``: the
    run's (``--max-memory``, bytes; 0: unknown), which sizes the local GPU lane's queues. ``cores``:
    the core budget of the local executor's workers (elastic threads); the serial and Ray executors
    ignore it (serial: one process with the libraries' default threads; Ray: one CPU per actor, the
    cluster's scheduler owns the cores). ``due``: the analyzers due in the run (default: all);
    ``fit_workers``: mirflow chose ``workers``, so the local executor may start fewer, as many as
    their copies of the due analyzers' models fit in the budget
    (:func:`mirflow.run.limits.workers_for_memory`)."""
    if kind == "serial":
        from .serial import SerialExecutor

        return SerialExecutor(specs, device=device)
    if kind == "local":
        from .local import LocalExecutor

        return LocalExecutor(specs, workers=workers, device=device, memory_budget=memory_budget,
                             cores=cores, due=due, fit_workers=fit_workers)
    if kind == "ray":
        from .ray import RayExecutor

        return RayExecutor(specs, workers=workers, device=device, address=ray_address)
    raise ConfigError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
