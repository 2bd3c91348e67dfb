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

No core idles while work remains (*elastic threads*, :mod:`mirflow.core.threads`): the executor
has a core budget (``cores``: the machine's cores by default, even when fewer workers were started
because there are fewer tracks) and divides it among the workers that are busy, through a shared
value per process. A worker alone at the tail of a run, or on one long track, takes the idle cores'
threads at its next analyzer call, and separation between forward passes (more concurrent
single-thread passes); they are given back, at the same points, when new work arrives.

With an accelerator (``--device auto`` finding CUDA/ROCm, or ``--device cuda[:N]``/``mps``) and GPU
analyzers in the run, a *GPU lane* is added: one process that owns the GPU analyzers (one model
copy on the device) and computes its tracks as a continuous stream
(:mod:`mirflow.executors.gpu_lane`, :mod:`mirflow.run.stream`):

- each track of a chunk is its own task, and the lane keeps up to
  :data:`~mirflow.executors.gpu_lane.LANE_WINDOW` of them in flight, so chunk boundaries mean
  nothing to it;
- in the lane, decode threads decode each upcoming track (its only decode in the run) and prepare
  the model input while the model runs; the model takes whatever tracks are ready, separation
  batching the segments of consecutive tracks into one forward pass; stems are written (or handed
  on) by finish threads while the model computes the next tracks;
- each track is reported as soon as its GPU part is done, and a track with CPU analyzers due goes
  at once to a CPU worker with its decoded mix and its stems in memory: the CPU worker writes the
  stems and runs the CPU analyzers on the mix and on the stems without decoding anything again;
- the tracks the lane holds in memory (decoded ahead, in the model, waiting to be written or handed
  on) stay within its share of ``--max-memory`` (:func:`mirflow.run.limits.lane_budget`, per track
  :func:`mirflow.run.limits.held_bytes` from the header), never below one track.

The arrays (a 55 s stereo 44.1 kHz track: 19 MB of mix and 78 MB of stems) are handed on only when
CPU analyzers are due, and then through shared memory (:mod:`mirflow.core.shared`): the lane copies
them once into a file in ``/dev/shm``, the coordinator forwards a handle of a few hundred bytes, and
the CPU worker maps the file. Where there is no room there (or no ``/dev/shm``) they are pickled
through the pipes instead. The coordinator removes every hand-off file once its track's CPU part is
over, and at shutdown any file a lost lane left.

A lane that dies (or overruns a track's time limit) with several tracks in flight is replaced and
every one of those tracks is re-run alone on the new lane (:mod:`mirflow.executors.supervisor`), so
only the culprit fails; the replacement loads the models again.

Without an accelerator, GPU analyzers run in the CPU workers like any other, and the stems reach
the per-stem analyzers in memory inside one worker.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from dataclasses import replace

from ..core import shared
from ..core.sidecar import AnalyzerResult
from ..run import limits
from ..run.worker import HANDOFF, AnalyzerSpec, ShippedTrack, WorkUnit, describe
from .gpu_lane import LANE_WINDOW, lane_main
from .lanes import accelerated_names, accelerated_specs, ok_names, then_cpu
from .process import THREAD_ENV_VARS, ProcessBackend
from .supervisor import Supervisor, failure

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
    is used (see the module docstring). ``gpu_lane=None`` decides automatically; ``memory_budget``
    is the run's (``--max-memory``, bytes; 0: unknown), of which the lane's queues take a share.
    ``cores``: the core budget the CPU workers share when some of them are idle (elastic threads;
    default and minimum ``workers * threads_per_worker``)."""

    def __init__(self, specs: list[AnalyzerSpec], *, workers: int, device: str = "auto",
                 threads_per_worker: int = 1, gpu_lane: bool | None = None,
                 memory_budget: float = 0.0, cores: int | None = None,
                 due: frozenset[str] | None = None, fit_workers: bool = False) -> None:
        from .. import analyzers as registry

        self.workers = max(1, int(workers))
        #: Core budget the CPU workers share (elastic threads): at least one core per worker thread.
        self.cores = max(int(cores or 0), self.workers * max(1, int(threads_per_worker)))
        gpu_specs = [s for s in specs if registry.get(s.name).device == "gpu"]
        if gpu_lane is None:
            gpu_lane = bool(gpu_specs) and accelerator_present(device)
        if gpu_lane:  # those that cannot use the accelerator here run on the CPU workers
            gpu_specs = accelerated_specs(gpu_specs, accelerated_names(gpu_specs, device),
                                          gpus=f"{device} here")
        self._gpu_names = frozenset(s.name for s in gpu_specs) if gpu_lane and gpu_specs else frozenset()
        #: Analyzers whose model every CPU worker keeps once it ran them, busy or idle: the run's
        #: memory budget counts them once per worker (empty when the user's ``--workers`` copies do
        #: not fit: then they count per track in flight, see :meth:`_fit_to_memory`).
        self.models_per_worker = frozenset(s.name for s in specs) - self._gpu_names
        self._fit_to_memory(self.models_per_worker & (due if due is not None else self.models_per_worker),
                            memory_budget, fit_workers)
        self._pool = Supervisor(ProcessBackend(list(specs), device=device, threads=threads_per_worker,
                                               label="worker", cores=self.cores),
                                self.workers, label="worker")
        self._gpu = (Supervisor(ProcessBackend(gpu_specs, device=device, threads=threads_per_worker,
                                               label="gpu-lane", main=lane_main,
                                               extra=(limits.lane_budget(memory_budget),)),
                                1, label="GPU lane", depth=LANE_WINDOW)
                     if self._gpu_names else None)
        #: Analyzers whose model one process (the lane) holds for every track: the coordinator
        #: counts their memory once, not per track in flight.
        self.models_held_once = self._gpu_names
        # one chunk computing and one waiting per CPU worker; the lane's window on top
        self.capacity = self.workers * 2 + (LANE_WINDOW if self._gpu else 0)
        if self._gpu:
            log.info("GPU lane for %s on %s", ", ".join(sorted(self._gpu_names)), device)
        stale = shared.sweep()  # hand-offs left by runs whose coordinator was killed
        if stale:
            log.info("removed %d shared-memory hand-off file(s) of earlier runs", stale)

    def _fit_to_memory(self, names: frozenset[str], budget: float, fit_workers: bool) -> None:
        """When the workers' copies of the models of ``names`` do not fit in the budget's share for
        them (:func:`~mirflow.run.limits.workers_for_memory`): with ``fit_workers`` (mirflow chose
        the number) start fewer workers, keeping the core budget, so each is lent more threads;
        else (the user's ``--workers``) keep them, say so, and leave the models to be counted per
        track in flight."""
        per_worker = limits.models_memory(names)
        fitted = limits.workers_for_memory(self.workers, per_worker, budget)
        if fitted >= self.workers:
            return
        copies = (f"{', '.join(sorted(names))} (about {limits.describe_gib(per_worker)} GiB each), "
                  f"more than {round(100 * limits.WORKER_MODELS_SHARE)} % of the "
                  f"{limits.describe_gib(budget)} GiB memory budget allows")
        if fit_workers:
            log.warning("%d workers would each hold a copy of %s: starting %d worker(s) on %d cores "
                        "(choose with --workers, --cores or --max-memory)", self.workers, copies,
                        fitted, self.cores)
            self.workers = fitted
        else:
            log.warning("--workers %d: each worker keeps a copy of %s; the tracks in flight are kept "
                        "within the budget, the idle workers' copies are not (fewer workers with "
                        "--cores, or a larger --max-memory, avoid it)", self.workers, copies)
            self.models_per_worker = frozenset()

    def submit(self, units: list[WorkUnit]) -> "Future[list[dict[str, AnalyzerResult]]]":
        if self._gpu is None or not any(set(u.due) & self._gpu_names for u in units):
            return self._pool.submit(units)
        outer: Future = Future()
        results: list[dict[str, AnalyzerResult] | None] = [None] * len(units)
        left = [len(units)]
        lock = threading.Lock()

        def deliver(indices: list[int], fut: Future) -> None:
            try:
                got = fut.result()
            except BaseException as exc:  # noqa: BLE001 - fails these tracks only
                got = [{n: failure(n, f"worker failed: {describe(exc)}") for n in units[i].due}
                       for i in indices]
            with lock:
                for i, res in zip(indices, got):
                    results[i] = res
                left[0] -= len(indices)
                done = left[0] == 0
            if done:
                outer.set_result(results)

        cpu_only = [i for i, u in enumerate(units) if not set(u.due) & self._gpu_names]
        for i, unit in enumerate(units):
            if i in cpu_only:
                continue
            # each track its own task: the lane streams them and reports each as it finishes
            gpu_unit = replace(unit, due=tuple(n for n in unit.due if n in self._gpu_names),
                               hand_on=any(n not in self._gpu_names for n in unit.due),
                               defer_writes=True)
            track_future: Future = Future()
            track_future.add_done_callback(lambda f, i=i: deliver([i], f))
            self._gpu.submit([gpu_unit]).add_done_callback(
                lambda f, unit=unit, out=track_future: self._after_gpu(f, unit, out))
        if cpu_only:
            self._pool.submit([units[i] for i in cpu_only]).add_done_callback(
                lambda f: deliver(cpu_only, f))
        return outer

    def _after_gpu(self, gpu_future: Future, unit: WorkUnit, outer: Future) -> None:
        """A track's GPU part is done: a CPU worker writes its stems (handed on, not yet written)
        and runs the CPU analyzers on the mix and the stems, both in memory; the results of both
        are combined."""

        def cpu_units(gpu_results: list[dict[str, AnalyzerResult]]) -> list[WorkUnit]:
            handed = [res.pop(HANDOFF, None) for res in gpu_results]
            # whatever becomes of the CPU part, the shared memory it was handed goes with it
            outer.add_done_callback(lambda _f: [d.release() for d in handed if isinstance(d, ShippedTrack)])
            # files the GPU lane left to write (stems) are written by a CPU worker first: their
            # analyzer is due there too, so a failed write (or a worker lost writing) fails it
            return [replace(unit, due=(*(d.writes if d else ()),
                                       *(n for n in unit.due if n not in self._gpu_names)),
                            ready=unit.ready | ok_names(res), decoded=d)
                    for res, d in zip(gpu_results, handed)]

        then_cpu(gpu_future, cpu_units, self._pool.submit, outer)

    @property
    def deaths(self) -> int:
        """Worker processes lost so far (CPU workers and GPU lane)."""
        return self._pool.deaths + (self._gpu.deaths if self._gpu else 0)

    def shutdown(self, *, cancel: bool = False) -> None:
        for sup in (self._gpu, self._pool):  # the GPU lane first: it feeds the CPU workers
            if sup is not None:
                sup.shutdown(cancel=cancel)
        if self._gpu is not None:  # hand-offs of a lane lost between writing one and sending it
            shared.sweep(owner=os.getpid())
