"""The coordinator of a run: plan, lease, dispatch, merge, summarise.

:func:`run` discovers the tracks, plans what is due, and feeds chunks of due tracks to an executor.
For each track it first takes the track's lease (a track held by another worker is skipped and
counted ``locked``), re-reads the sidecar under the lease and plans again (so two concurrent runs
never compute the same pair twice), removes temporaries a dead worker left behind, and dispatches.
Results come back to this process, which merges them into the sidecar atomically while it still
holds the lease, then releases it.

SIGINT/SIGTERM: the first one stops dispatching new tracks and lets in-flight tracks finish and be
written; a second one abandons in-flight work (worker processes are stopped, their temporaries
removed, no sidecar is half-written). Either way a summary is returned and the next run resumes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import analyzers as registry
from ..analyzers.base import Analyzer
from ..core.config import RunOptions
from ..core.errors import ConfigError
from ..core.dataset import Track, discover
from .worker import AnalyzerSpec, WorkUnit, describe
from ..executors import make_executor
from ..core.locks import Lease, try_lease
from .plan import BLOCKED, DONE, DUE, FAILED, UNAVAILABLE, decide, read_for_plan, source_fingerprint
from ..core.sidecar import AnalyzerResult, merge
from .timing import Timing
from . import limits

log = logging.getLogger(__name__)

COUNT_NAMES = ("done", "skipped", "locked", "failed", "blocked", "unavailable", "previously_failed")


@dataclass
class Failure:
    track: str
    analyzer: str
    error: str


@dataclass
class RunSummary:
    """What a run did; ``counts[analyzer][kind]`` with kind in :data:`COUNT_NAMES`."""

    dataset: str
    analyzers: list[str]
    tracks: int = 0
    tracks_processed: int = 0
    counts: dict[str, Counter] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    #: Due tracks left for later runs by ``--limit``.
    held_back: int = 0
    interrupted: bool = False
    forced: bool = False
    #: The timing report (:meth:`mirflow.run.timing.Timing.finish`): per analyzer, stage, accelerator.
    timing: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(c["failed"] for c in self.counts.values())

    @property
    def work_done(self) -> int:
        return sum(c["done"] + c["failed"] + c["blocked"] for c in self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "tracks": self.tracks,
            "tracks_processed": self.tracks_processed,
            "analyzers": {name: {k: int(self.counts[name][k]) for k in COUNT_NAMES}
                          | {"seconds": round(self.seconds.get(name, 0.0), 3)}
                          for name in self.analyzers},
            "unavailable": self.unavailable,
            "failures": [f.__dict__ for f in self.failures],
            "quarantined_sidecars": self.quarantined,
            "held_back": self.held_back,
            "interrupted": self.interrupted,
            "wall_seconds": round(self.wall_seconds, 3),
            "timing": self.timing,
        }


#: Progress callback: ``progress(event, **data)``; events ``plan``, ``track``, ``stopping``.
ProgressFn = Callable[..., None]


def build_analyzers(options: RunOptions) -> tuple[dict[str, Analyzer], dict[str, str]]:
    """Instances (not set up) of the run's analyzers, in run order, with the configured params,
    and ``{name: reason}`` for those that cannot run here (e.g. a missing model)."""
    order = registry.resolve_order(options.analyzers)
    analyzers = {name: registry.get(name)(**options.params.get(name, {})) for name in order}
    unavailable = {n: r for n, a in analyzers.items() if (r := a.unavailable_reason())}
    return analyzers, unavailable


class _StopFlag:
    """Counts SIGINT/SIGTERM while installed; restores the previous handlers on exit."""

    def __init__(self, *, raise_on_second: bool = False) -> None:
        self.count = 0
        self.raise_on_second = raise_on_second
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        log.info("received %s: %s", signal.Signals(signum).name,
                    "finishing tracks in flight (again to abandon them)" if self.count == 1
                    else "abandoning tracks in flight")
        if self.count >= 2 and self.raise_on_second:
            raise KeyboardInterrupt  # in-process work can only be abandoned by unwinding it

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run(dataset: str | os.PathLike[str], options: RunOptions, *,
        progress: ProgressFn | None = None) -> RunSummary:
    """Analyse every track of ``dataset`` that has something due; see the module docstring."""
    started = time.perf_counter()
    root = Path(dataset)
    emit = progress or (lambda *a, **k: None)
    analyzers, unavailable = build_analyzers(options)
    if options.explicit_analyzers:
        _check_named_available(options.analyzers, unavailable)
    summary = RunSummary(dataset=str(root), analyzers=list(analyzers), unavailable=unavailable,
                         counts={n: Counter() for n in analyzers}, forced=bool(options.force))
    tracks = discover(root)
    summary.tracks = len(tracks)

    pending: deque[Track] = deque()
    due_names: dict[Track, tuple[str, ...]] = {}
    for track in tracks:
        decisions = decide(track, read_for_plan(track), analyzers, unavailable=unavailable,
                           force=options.force, retry_failed=options.retry_failed)
        if any(d.due for d in decisions.values()):
            pending.append(track)
            due_names[track] = tuple(n for n, d in decisions.items() if d.due)
        else:
            _count_terminal(summary, decisions)
    if options.limit and len(pending) > options.limit:
        pending, held = sample_evenly(pending, options.limit)
        summary.held_back = len(held)
        for track in held:
            del due_names[track]
    emit("plan", tracks=len(tracks), due=len(pending), unavailable=unavailable)
    if not pending:
        summary.wall_seconds = time.perf_counter() - started
        return summary

    # the Ray executor sizes its CPU pool to the cluster's free CPUs (bounded by the tracks)
    workers = (options.workers or options.cores
               or (len(pending) if options.executor == "ray" else os.cpu_count()) or 1)
    # the local workers' core budget (--cores, else one per worker): kept when fewer tracks than
    # workers remain, so the busy workers are lent the idle ones' cores
    cores = max(options.cores, workers)
    workers = max(1, min(workers, len(pending)))
    specs = [AnalyzerSpec(n, options.params.get(n, {})) for n in analyzers
             if n not in unavailable]
    emit("phase", name="warming up: starting workers, loading models, compiling")
    budget = options.max_memory or limits.default_memory_budget()
    due_all = frozenset().union(*due_names.values())
    executor = make_executor(options.executor, specs, workers=workers, device=options.device,
                             ray_address=options.ray_address, memory_budget=budget, cores=cores,
                             due=due_all, fit_workers=not options.workers)
    workers = executor.workers  # fewer when their model copies would not fit in the budget
    timing = Timing(analyzers, unavailable=unavailable, device=options.device, started=started,
                    workers=workers, executor=options.executor,
                    cores=cores if options.executor == "local" else 0)
    timing.planned(root, due_names)  # durations, rates and the ETA, in a background thread
    batchable = any(a.batchable for n, a in analyzers.items() if n not in unavailable)
    # batch across tracks only while every worker still gets several chunks (load balance)
    chunk = options.chunk or (max(1, min(4, len(pending) // (2 * workers))) if batchable else 1)
    # models one process holds for every track (the GPU lane's) count once; those each worker keeps
    # once it ran them count once per worker, busy or idle; neither counts again per track
    once, per_worker = executor.models_held_once & due_all, executor.models_per_worker & due_all
    fixed = limits.models_memory(once) + workers * limits.models_memory(per_worker)
    held = once | per_worker
    inflight: dict[Future, list[tuple[WorkUnit, Lease]]] = {}
    submitting: list[tuple[WorkUnit, Lease]] = []
    waiting: list[tuple[WorkUnit, Lease]] = []  # leased, held back until memory frees up
    own_work = _Stopwatch()  # leasing, planning, merging and writing sidecars (not the compute)
    loop0, cpu0, main0 = time.perf_counter(), time.process_time(), time.thread_time()
    with _StopFlag(raise_on_second=options.executor == "serial") as stop:
        try:
            announced = False
            while ((pending or waiting) and not stop.count) or inflight:
                if stop.count >= 2:
                    break
                if stop.count and not announced:
                    announced = True
                    emit("stopping", in_flight=sum(len(v) for v in inflight.values()))
                if stop.count and waiting:  # never started: give the tracks back
                    for _unit, lease in waiting:
                        lease.release()
                    waiting = []
                while (pending or waiting) and not stop.count and len(inflight) < executor.capacity:
                    with own_work:
                        submitting = waiting or _lease_chunk(pending, chunk, analyzers, unavailable,
                                                             options, summary, emit, held)
                        waiting = []
                        submitting = _over_budget(submitting, budget, fixed, analyzers, summary,
                                                  emit, timing)
                    need = sum(u.memory for u, _ in submitting)
                    if submitting and inflight and budget and fixed + need + sum(
                            u.memory for v in inflight.values() for u, _ in v) > budget:
                        waiting, submitting = submitting, []  # wait for tracks in flight to finish
                        break
                    if submitting:
                        inflight[executor.submit([u for u, _ in submitting])] = submitting
                    submitting = []
                timing.poll(emit, executor)
                if not inflight:
                    continue
                done, _ = wait(list(inflight), timeout=0.25, return_when=FIRST_COMPLETED)
                with own_work:
                    for fut in done:
                        _finish(fut, inflight.pop(fut), analyzers, summary, emit, timing)
        except KeyboardInterrupt:
            stop.count = max(stop.count, 2)
        finally:
            summary.interrupted = stop.count > 0
            abandoned = [*submitting, *waiting, *(x for v in inflight.values() for x in v)]
            if abandoned:
                emit("abandoning", abandoned=len(abandoned))
            executor.shutdown(cancel=bool(inflight))
            for _unit, lease in abandoned:  # clean temporaries; sidecars were never half-written
                lease.clean_stale_temporaries()
                lease.release()
    summary.wall_seconds = time.perf_counter() - started
    # this process's other threads (receiving results, reading durations) work for the tracks too
    helpers = max(0.0, (time.process_time() - cpu0) - (time.thread_time() - main0))
    timing.coordinator_busy(own_work.seconds + helpers, time.perf_counter() - loop0)
    summary.timing = timing.finish(summary.wall_seconds, executor)
    return summary


class _Stopwatch:
    """Adds up the seconds spent inside its ``with`` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._since = 0.0

    def __enter__(self) -> "_Stopwatch":
        self._since = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._since


def sample_evenly(tracks: "deque[Track]", n: int) -> tuple["deque[Track]", list[Track]]:
    """``(kept, held back)``: ``n`` of ``tracks`` spread evenly over their order (the middle of each
    of ``n`` equal stretches), so a sample of a dataset sorted by folder covers all its folders, and
    the rest. Deterministic: a later run with the same limit samples from what is still due."""
    items = list(tracks)
    chosen = {int((i + 0.5) * len(items) / n) for i in range(n)}
    return (deque(t for i, t in enumerate(items) if i in chosen),
            [t for i, t in enumerate(items) if i not in chosen])


def _check_named_available(named: list[str], unavailable: dict[str, str]) -> None:
    """An analyzer the user asked for by name (or one it requires) that cannot run here is an
    error before any work starts, not a quiet "nothing to do"."""
    wanted = set(registry.resolve_order(named))
    missing = {n: r for n, r in unavailable.items() if n in wanted}
    if missing:
        raise ConfigError("; ".join(f"{n} cannot run here: {r}" for n, r in missing.items()))


def _over_budget(leased: list[tuple[WorkUnit, Lease]], budget: float, fixed: int,
                 analyzers: dict[str, Analyzer], summary: RunSummary, emit: ProgressFn,
                 timing: Any) -> list[tuple[WorkUnit, Lease]]:
    """Fail (and write) the tracks whose estimated working set, with the ``fixed`` bytes of the
    models held once for the run, exceeds ``budget``; the rest."""
    if not budget:
        return leased
    over = [(u, lease) for u, lease in leased if fixed + u.memory > budget]
    if not over:
        return leased
    reason = "needs about {} GiB, budget {} GiB (--max-memory)"
    fut: Future = Future()
    fut.set_result([{n: AnalyzerResult(status="error", error=reason.format(
        limits.describe_gib(fixed + u.memory), limits.describe_gib(budget))) for n in u.due}
        for u, _ in over])
    _finish(fut, over, analyzers, summary, emit, timing)
    return [x for x in leased if x not in over]


def _count_terminal(summary: RunSummary, decisions: dict[str, Any]) -> None:
    for name, d in decisions.items():
        key = {DONE: "skipped", FAILED: "previously_failed", BLOCKED: "blocked",
               UNAVAILABLE: "unavailable"}.get(d.state)
        if key:
            summary.counts[name][key] += 1


def _lease_chunk(pending: deque[Track], chunk: int, analyzers: dict[str, Analyzer],
                 unavailable: dict[str, str], options: RunOptions,
                 summary: RunSummary, emit: ProgressFn,
                 held: frozenset[str] = frozenset()) -> list[tuple[WorkUnit, Lease]]:
    """Take up to ``chunk`` tracks from ``pending`` whose lease we get and that are still due."""
    leased: list[tuple[WorkUnit, Lease]] = []
    while pending and len(leased) < chunk:
        track = pending.popleft()
        lease = try_lease(track)
        if lease is None:
            for name in analyzers:
                summary.counts[name]["locked"] += 1
            emit("track", track=track.relpath(Path(summary.dataset)), failed=False,
                 failures=summary.failed, skipped="locked")
            continue
        data = read_for_plan(track)  # again, under the lease: another run may have finished it
        decisions = decide(track, data, analyzers, unavailable=unavailable,
                           force=options.force, retry_failed=options.retry_failed)
        due = tuple(n for n, d in decisions.items() if d.state == DUE)
        if due:  # the worker records, with the rest, why pairs found blocked at planning are
            due = tuple(n for n, d in decisions.items() if d.state == DUE or d.unrecorded)
        _count_terminal(summary, {n: d for n, d in decisions.items() if n not in due})
        if not due:
            lease.release()
            emit("track", track=track.relpath(Path(summary.dataset)), failed=False,
                 failures=summary.failed, skipped="done meanwhile")
            continue
        lease.clean_stale_temporaries()
        ready = frozenset(n for n, d in decisions.items() if d.state == DONE)
        info = limits.audio_info(track.mix)
        leased.append((WorkUnit(track, due, ready,
                                timeout=limits.track_timeout(info, options.track_timeout),
                                memory=limits.memory_needed(info, due, held) if info else 0), lease))
    return leased


def _finish(fut: Future, leased: list[tuple[WorkUnit, Lease]], analyzers: dict[str, Analyzer],
            summary: RunSummary, emit: ProgressFn, timing: Timing | None = None) -> None:
    try:
        outcomes = fut.result()
    except Exception as exc:  # noqa: BLE001 - e.g. a worker process died: fail these tracks only
        reason = f"worker failed: {describe(exc)}"
        log.error("%s", reason)
        outcomes = [{n: AnalyzerResult(status="error", error=reason, version=analyzers[n].version,
                                       params=analyzers[n].params_hash()) for n in unit.due}
                    for unit, _ in leased]
    for (unit, lease), results in zip(leased, outcomes):
        rel = unit.track.relpath(Path(summary.dataset))
        for name, res in results.items():  # failures decided outside the worker (a worker's death)
            if not res.params and name in analyzers:
                res.version, res.params = analyzers[name].version, analyzers[name].params_hash()
        try:
            try:
                source = source_fingerprint(unit.track)
            except OSError:
                source = None
            quarantined = merge(unit.track.sidecar, results, source=source)
            if quarantined:
                summary.quarantined.append(str(quarantined))
        except OSError as exc:
            log.error("cannot write sidecar of %s: %s", rel, exc)
            for r in results.values():
                r.status, r.error = "error", f"sidecar not written: {describe(exc)}"
        finally:
            lease.release()
        failed = False
        for name, res in results.items():
            summary.seconds[name] = summary.seconds.get(name, 0.0) + res.seconds
            if res.status == "ok":
                summary.counts[name]["done"] += 1
            elif res.status == "blocked":
                summary.counts[name]["blocked"] += 1
            else:
                failed = True
                summary.counts[name]["failed"] += 1
                summary.failures.append(Failure(rel, name, res.error or "unknown error"))
        summary.tracks_processed += 1
        if timing is not None:
            timing.track_done(unit.track, results)
        emit("track", track=rel, failed=failed, failures=summary.failed)


__all__ = ["RunSummary", "run", "status", "build_analyzers"]


@dataclass
class DatasetStatus:
    """Per analyzer: how many tracks are done / due / failed / blocked / unavailable, and why."""

    dataset: str
    tracks: int
    analyzers: list[str]
    counts: dict[str, Counter]
    unavailable: dict[str, str]
    failures: list[Failure]
    blocked: list[Failure]
    #: ``{analyzer: Counter({reason: tracks})}``: why pairs are due ("parameter changed: ...").
    due_reasons: dict[str, Counter] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "tracks": self.tracks,
                "analyzers": {n: {k: int(self.counts[n][k]) for k in
                                  ("done", "due", "failed", "blocked", "unavailable")}
                              for n in self.analyzers},
                "unavailable": self.unavailable,
                "due_reasons": {n: dict(c) for n, c in self.due_reasons.items()},
                "failures": [f.__dict__ for f in self.failures],
                "blocked": [f.__dict__ for f in self.blocked]}


def status(dataset: str | os.PathLike[str], options: RunOptions) -> DatasetStatus:
    """What a run with ``options`` would find: read-only, decodes nothing, takes no lease."""
    root = Path(dataset)
    analyzers, unavailable = build_analyzers(options)
    counts = {n: Counter() for n in analyzers}
    failures: list[Failure] = []
    blocked: list[Failure] = []
    due_reasons: dict[str, Counter] = {}
    tracks = discover(root)
    for track in tracks:
        for name, d in decide(track, read_for_plan(track), analyzers, unavailable=unavailable,
                              retry_failed=options.retry_failed).items():
            counts[name][d.state] += 1
            if d.state == FAILED:
                failures.append(Failure(track.relpath(root), name, d.reason))
            elif d.state == BLOCKED:
                blocked.append(Failure(track.relpath(root), name, d.reason))
            elif d.state == DUE:
                due_reasons.setdefault(name, Counter())[d.reason] += 1
    return DatasetStatus(str(root), len(tracks), list(analyzers), counts, unavailable, failures,
                         blocked, due_reasons)
