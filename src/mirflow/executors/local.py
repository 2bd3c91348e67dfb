"""The local executor: a pool of worker processes on this machine.

Each worker process is started with every BLAS/OpenMP/numba/torch thread pool limited to one
thread (environment variables set before the child imports any numeric library, plus
``threadpoolctl`` as a second line), so N workers use N cores without oversubscription. Each worker
builds its analyzers once (``setup()``) and keeps them for the whole run.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from ..engine import AnalyzerSpec, WorkUnit, Worker
from ..sidecar import AnalyzerResult

log = logging.getLogger(__name__)

#: Variables that size the thread pools of OpenBLAS, MKL, OpenMP, Apple Accelerate, numexpr and numba.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")

_worker: Worker | None = None  # this worker process's analyzers (one Worker per process)
_limits: Any = None


def _init_worker(specs: list[AnalyzerSpec], device: str, threads: int, log_level: int) -> None:
    global _worker, _limits
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides how to stop
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    from threadpoolctl import threadpool_limits

    _limits = threadpool_limits(limits=threads)
    _worker = Worker(specs, device=device)


def _process(units: list[WorkUnit]) -> list[dict[str, AnalyzerResult]]:
    assert _worker is not None, "worker process not initialised"
    return _worker.process(units)


def _close() -> None:
    if _worker is not None:
        _worker.close()


class LocalExecutor:
    """A process pool of ``workers`` processes, each single-threaded (see the module docstring)."""

    def __init__(self, specs: list[AnalyzerSpec], *, workers: int, device: str = "auto",
                 threads_per_worker: int = 1) -> None:
        self.workers = max(1, int(workers))
        self.capacity = self.workers * 2  # one chunk computing, one waiting, per worker
        self._saved_env = {k: os.environ.get(k) for k in THREAD_ENV_VARS}
        for k in THREAD_ENV_VARS:  # inherited by the spawned children before they import numpy
            os.environ[k] = str(threads_per_worker)
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(specs, device, threads_per_worker, logging.getLogger().getEffectiveLevel()))

    def submit(self, units: list[WorkUnit]) -> "Future[list[dict[str, AnalyzerResult]]]":
        return self._pool.submit(_process, units)

    def shutdown(self, *, cancel: bool = False) -> None:
        if cancel:  # abandon in-flight work: stop the worker processes now
            procs = list((getattr(self._pool, "_processes", None) or {}).values())
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in procs:
                proc.join(timeout=5)
            self._pool.shutdown(wait=False, cancel_futures=True)
        else:
            self._pool.shutdown(wait=True)
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
