"""The local executor: supervised worker processes on this machine.

Workers are managed one by one (:mod:`mirflow.executors.process`) under a
:class:`~mirflow.executors.supervisor.Supervisor`, which knows which tracks are in flight on which
worker: a worker that dies (OOM killer, segfault, ``os._exit``) or overruns a track's time limit
is replaced, and its tracks are re-run one at a time so that only the culprit fails. Workers exit
by themselves when the coordinator dies (parent-death signal and watchdog).

Each worker process is started with every BLAS/OpenMP/numba/torch thread pool limited to one
thread (environment variables set before the child imports any numeric library, plus
``threadpoolctl`` as a second line), so N workers use N cores without oversubscription. Each worker
builds its analyzers once (``setup()``) and keeps them for the whole run.

With an accelerator (``--device auto`` finding CUDA/ROCm, or ``--device cuda[:N]``/``mps``) and GPU
analyzers in the run, a *GPU lane* is added: one process that owns the GPU analyzers (one model
copy on the device, batching across the tracks of a chunk) and feeds the CPU lane, which runs the
remaining analyzers of each track once the GPU lane is done with it. The GPU lane works on the next
chunk while the CPU lane works on the previous one, so the accelerator does not wait for CPU
features. Without an accelerator, GPU analyzers run in the CPU workers like any other. The GPU lane
is supervised like the CPU workers; its replacement loads the models again.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import replace

from ..run.worker import HANDOFF, AnalyzerSpec, WorkUnit
from ..core.sidecar import AnalyzerResult
from .process import THREAD_ENV_VARS, ProcessBackend
from .supervisor import Supervisor

log = logging.getLogger(__name__)

__all__ = ["LocalExecutor", "THREAD_ENV_VARS", "accelerator_present"]


def accelerator_present(device: str) -> bool:
    """Whether the run's device (resolved once in configuration: ``cpu``, ``cuda:N``, ``mps``) is an
    accelerator. ``auto`` (a caller outside a run) is resolved by :mod:`mirflow.core.devices`."""
    if device == "auto":
        from ..core.devices import resolve

        device = str(resolve("auto"))
    return device != "cpu"


class LocalExecutor:
    """A process pool of ``workers`` single-threaded processes, plus a GPU lane when an accelerator
    is used (see the module docstring). ``gpu_lane=None`` decides automatically."""

    def __init__(self, specs: list[AnalyzerSpec], *, workers: int, device: str = "auto",
                 threads_per_worker: int = 1, gpu_lane: bool | None = None) -> None:
        from .. import analyzers as registry

        self.workers = max(1, int(workers))
        gpu_specs = [s for s in specs if registry.get(s.name).device == "gpu"]
        if gpu_lane is None:
            gpu_lane = bool(gpu_specs) and accelerator_present(device)
        self._gpu_names = frozenset(s.name for s in gpu_specs) if gpu_lane and gpu_specs else frozenset()
        cpu_specs = [s for s in specs if s.name not in self._gpu_names]
        self._pool = Supervisor(ProcessBackend(cpu_specs, device=device, threads=threads_per_worker,
                                               label="worker"), self.workers, label="worker")
        self._gpu = (Supervisor(ProcessBackend(gpu_specs, device=device, threads=threads_per_worker,
                                               label="gpu-lane"), 1, label="GPU lane")
                     if self._gpu_names else None)
        # one chunk computing and one waiting per CPU worker, plus two for the GPU lane
        self.capacity = self.workers * 2 + (2 if self._gpu else 0)
        if self._gpu:
            log.info("GPU lane for %s on %s", ", ".join(sorted(self._gpu_names)), device)

    def submit(self, units: list[WorkUnit]) -> "Future[list[dict[str, AnalyzerResult]]]":
        if self._gpu is None or not any(set(u.due) & self._gpu_names for u in units):
            return self._pool.submit(units)
        outer: Future = Future()
        # the GPU lane decodes each track once and hands the signal (and the stems it separated)
        # to the CPU lane in memory, for the tracks that still have CPU analyzers due
        gpu_units = [replace(u, due=tuple(n for n in u.due if n in self._gpu_names),
                             hand_on=any(n not in self._gpu_names for n in u.due)) for u in units]
        gpu_future = self._gpu.submit(gpu_units)
        gpu_future.add_done_callback(lambda f: self._after_gpu(f, units, outer))
        return outer

    def _after_gpu(self, gpu_future: Future, units: list[WorkUnit], outer: Future) -> None:
        """Hand the CPU part of each track to the CPU lane, then combine both lanes' results."""
        try:
            gpu_results = gpu_future.result()
            handed = [res.pop(HANDOFF, None) for res in gpu_results]
            cpu_units = [replace(u, due=tuple(n for n in u.due if n not in self._gpu_names),
                                 ready=u.ready | {n for n, r in res.items() if r.status == "ok"},
                                 decoded=decoded)
                         for u, res, decoded in zip(units, gpu_results, handed)]
            if not any(u.due for u in cpu_units):
                outer.set_result(gpu_results)
                return
            cpu_future = self._pool.submit(cpu_units)
        except BaseException as exc:  # noqa: BLE001 - reported per track by the coordinator
            outer.set_exception(exc)
            return

        def combine(f: Future) -> None:
            try:
                outer.set_result([{**g, **c} for g, c in zip(gpu_results, f.result())])
            except BaseException as exc:  # noqa: BLE001
                outer.set_exception(exc)

        cpu_future.add_done_callback(combine)

    @property
    def deaths(self) -> int:
        """Worker processes lost so far (CPU workers and GPU lane)."""
        return self._pool.deaths + (self._gpu.deaths if self._gpu else 0)

    def shutdown(self, *, cancel: bool = False) -> None:
        for sup in (self._gpu, self._pool):  # the GPU lane first: it feeds the CPU workers
            if sup is not None:
                sup.shutdown(cancel=cancel)
