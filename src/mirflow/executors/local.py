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
copy on the device, batching across the tracks of a chunk). By default (:data:`STAGED` False) the
lane decodes each track once (decoder threads reading ahead), writes the stems it separates (writer
threads) and, when CPU analyzers are due on the track, hands the decoded mix and the stems in memory
to a CPU worker, which runs them without decoding anything again.

With :data:`STAGED` a chunk goes through three stages instead, each a supervisor whose results feed
the next one's ``submit``:

1. a CPU worker decodes each track (the only decode of that track in the run) and runs the GPU
   analyzers' :meth:`~mirflow.analyzers.base.Analyzer.prepare` step (resampling to the model rate,
   the VGGish front end);
2. the GPU lane runs the models on the tracks handed to it in memory; it writes nothing: the stems
   it separates travel on in memory;
3. a CPU worker writes the stems (atomically, :mod:`mirflow.core.stems_io`) and runs the CPU
   analyzers on the mix and on the stems, both in memory (no stem file is decoded).

Stage-1 and stage-3 tasks share the CPU workers' queue (first come, first served). Arrays travel
pickled through the coordinator and the workers' pipes (a 55 s stereo 44.1 kHz track: 19 MB of
mix, 19 MB of model input, 78 MB of stems), not yet measured against the default on a GPU.

Without an accelerator, GPU analyzers run in the CPU workers like any other, and the stems reach
the per-stem analyzers in memory inside one worker. The GPU lane is supervised like the CPU
workers; its replacement loads the models again.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import replace

from ..run.worker import HANDOFF, AnalyzerSpec, WorkUnit
from ..core.sidecar import AnalyzerResult
from .lanes import ok_names, then_cpu
from .process import THREAD_ENV_VARS, ProcessBackend
from .supervisor import Supervisor

log = logging.getLogger(__name__)

#: Whether a chunk with GPU analyzers goes through the three stages of the module docstring (True)
#: or the GPU lane decodes its tracks and writes its stems itself, in its own threads, and hands the
#: decoded mix and the stems in memory to a CPU worker only when CPU analyzers are due (False, the
#: default). The staged hand-over pickles every array through the coordinator (about 135 MB per
#: 55 s track); it stays off until measured on a GPU against the lane (benchmarks/RESULTS.md,
#: section 10: the one GPU run of it was invalid).
STAGED = False

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
    is used (see the module docstring). ``gpu_lane=None`` decides automatically. ``cores``: the
    core budget the CPU workers share when some of them are idle (elastic threads; default and
    minimum ``workers * threads_per_worker``)."""

    def __init__(self, specs: list[AnalyzerSpec], *, workers: int, device: str = "auto",
                 threads_per_worker: int = 1, gpu_lane: bool | None = None,
                 cores: int | None = None) -> None:
        from .. import analyzers as registry

        self.workers = max(1, int(workers))
        #: Core budget the CPU workers share (elastic threads): at least one core per worker thread.
        self.cores = max(int(cores or 0), self.workers * max(1, int(threads_per_worker)))
        gpu_specs = [s for s in specs if registry.get(s.name).device == "gpu"]
        if gpu_lane is None:
            gpu_lane = bool(gpu_specs) and accelerator_present(device)
        self._gpu_names = frozenset(s.name for s in gpu_specs) if gpu_lane and gpu_specs else frozenset()
        # the CPU workers know the GPU analyzers too: they run their prepare() step (never setup)
        self._pool = Supervisor(ProcessBackend(list(specs), device=device, threads=threads_per_worker,
                                               label="worker", cores=self.cores),
                                self.workers, label="worker")
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
        if not STAGED:  # the lane decodes and writes; the CPU workers get the track in memory
            gpu_units = [replace(u, due=tuple(n for n in u.due if n in self._gpu_names),
                                 hand_on=any(n not in self._gpu_names for n in u.due)) for u in units]
            self._gpu.submit(gpu_units).add_done_callback(lambda f: self._after_gpu(f, units, outer))
            return outer
        # stage 1, a CPU worker: decode each track once and prepare the GPU analyzers' input
        decode_units = [replace(u, due=(), hand_on=True,
                                prepare=tuple(n for n in u.due if n in self._gpu_names)) for u in units]
        decode_future = self._pool.submit(decode_units)
        decode_future.add_done_callback(lambda f: self._to_gpu(f, units, outer))
        return outer

    def _to_gpu(self, decode_future: Future, units: list[WorkUnit], outer: Future) -> None:
        """Stage 2, the GPU lane: the models only, on the decoded and prepared tracks; it hands the
        track and what it made (stems, not yet written) on to the CPU workers."""
        try:
            handed = [res.get(HANDOFF) for res in decode_future.result()]
        except BaseException:  # noqa: BLE001 - a lost decode stage: the GPU lane decodes itself
            handed = [None] * len(units)
        try:
            gpu_units = [replace(u, due=tuple(n for n in u.due if n in self._gpu_names), hand_on=True,
                                 defer_writes=True, decoded=d) for u, d in zip(units, handed)]
            gpu_future = self._gpu.submit(gpu_units)
        except BaseException as exc:  # noqa: BLE001 - reported per track by the coordinator
            outer.set_exception(exc)
            return
        gpu_future.add_done_callback(lambda f: self._after_gpu(f, units, outer))

    def _after_gpu(self, gpu_future: Future, units: list[WorkUnit], outer: Future) -> None:
        """Stage 3, a CPU worker: write the stems, run the CPU analyzers on the mix and the stems
        (both in memory), then combine the GPU lane's and the CPU workers' results."""

        def cpu_units(gpu_results: list[dict[str, AnalyzerResult]]) -> list[WorkUnit]:
            handed = [res.pop(HANDOFF, None) for res in gpu_results]
            # files the GPU lane left to write (stems) are written by a CPU worker first: their
            # analyzer is due there too, so a failed write (or a worker lost writing) fails it
            return [replace(u, due=(*(d.writes if d else ()),
                                    *(n for n in u.due if n not in self._gpu_names)),
                            ready=u.ready | ok_names(res), decoded=d)
                    for u, res, d in zip(units, gpu_results, handed)]

        then_cpu(gpu_future, cpu_units, self._pool.submit, outer)

    @property
    def deaths(self) -> int:
        """Worker processes lost so far (CPU workers and GPU lane)."""
        return self._pool.deaths + (self._gpu.deaths if self._gpu else 0)

    def shutdown(self, *, cancel: bool = False) -> None:
        for sup in (self._gpu, self._pool):  # the GPU lane first: it feeds the CPU workers
            if sup is not None:
                sup.shutdown(cancel=cancel)
