"""Fault isolation shared by the process executors: a worker's death is a track failure.

A :class:`Supervisor` owns a set of *slots*, each holding one worker (a local process or a Ray
actor, see :class:`Backend`) that computes one task (a list of work units) at a time. It knows
which units are in flight on which worker, so when a worker dies (SIGKILL from the OOM killer, a
segfault in native code, ``os._exit``) or overruns its deadline it can:

1. start a replacement worker in the same slot (its analyzers are set up again: models reloaded);
2. re-run the dead task's units one at a time, in isolation, so the culprit is found and the
   innocent units complete;
3. fail the culprit: a unit whose worker died twice (or that hung once, alone) gets a reason a user
   can act on (``worker killed by signal 9 (SIGKILL) while analysing this track (out of
   memory?)``, ``timed out after 600 s``) on the analyzer that was running, and its other due
   analyzers are tried once more without it. Retries are bounded: no unit kills workers forever.

A worker that dies while *setting up* an analyzer (loading a model) is not the fault of its tracks:
after two such deaths the analyzer is marked broken and every later unit gets its setup failure
without starting more workers for it.

The supervisor keeps a queue of tasks and feeds free workers from it in a background thread, so
the same machinery can serve each stage of a pipelined executor: a stage is a supervisor whose
results feed the next stage's :meth:`Supervisor.submit`.

A slot computes one task at a time by default. With ``depth`` > 1 it is given up to that many tasks
at once (the local executor's GPU lane, which pipelines the tracks it holds and reports each task as
it finishes). When such a worker dies with several units in flight nobody knows which one killed
it, so every one of them is re-run *alone*: an isolated task is only sent to an idle worker, and
nothing else is sent to that worker until it is done.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .. import analyzers as registry
from ..core.sidecar import AnalyzerResult
from ..run.worker import WorkUnit

log = logging.getLogger(__name__)

#: A unit whose worker died this many times is failed (the first death may be another unit's fault).
MAX_DEATHS = 2
#: Poll interval of the supervisor thread, seconds (deaths are noticed at once through sentinels).
POLL_S = 0.2
#: A worker that dies this many times in a row before reporting anything (it cannot start: a broken
#: installation, an actor that cannot be created) fails the run instead of every track.
MAX_STARTUP_FAILURES = 3
#: Extra seconds before a task's first report from its worker (a fresh process imports its libraries).
START_GRACE_S = 120.0


def death_reason(exitcode: int | None) -> str:
    """What a user reads for a worker process that ended with ``exitcode`` (negative: a signal)."""
    if exitcode is None:
        return "worker died while analysing this track"
    if exitcode < 0:
        num = -exitcode
        try:
            name = signal.Signals(num).name
        except ValueError:
            name = f"signal {num}"
        if num == signal.SIGSEGV:
            return "segmentation fault (SIGSEGV) in native code while analysing this track"
        if num == signal.SIGKILL:
            return ("worker killed by signal 9 (SIGKILL) while analysing this track "
                    "(out of memory?)")
        if num == getattr(signal, "SIGBUS", None):
            return f"bus error ({name}) in native code while analysing this track"
        if num == signal.SIGABRT:
            return f"native code aborted ({name}) while analysing this track"
        return f"worker killed by signal {num} ({name}) while analysing this track"
    return f"worker exited with code {exitcode} while analysing this track"


@dataclass
class Event:
    """Something a worker reported: ``kind`` is ``result``, ``error`` (the task raised in the
    worker; ``data`` is the message), ``phase`` (``data`` = ``(step, analyzer)``) or ``died``
    (``data`` = a reason from :func:`death_reason`)."""

    kind: str
    data: Any = None
    task: int | None = None


class Slot(Protocol):
    """One worker place. The backend starts, feeds and stops its worker."""

    def start(self) -> None: ...

    def send(self, task_id: int, units: list[WorkUnit]) -> None: ...

    def kill(self) -> None: ...

    def close(self, timeout: float) -> None: ...


class Backend(Protocol):
    """Where workers live (local processes, Ray actors)."""

    def new_slot(self, index: int) -> Slot: ...

    def poll(self, slots: list[Slot], timeout: float) -> list[tuple[Slot, Event]]: ...


@dataclass
class _Job:
    """One unit of a submitted chunk, with what the supervisor learned about it so far."""

    batch: "_Batch"
    index: int
    unit: WorkUnit
    deaths: int = 0
    decided: dict[str, AnalyzerResult] = field(default_factory=dict)  # failures decided here


@dataclass(eq=False)
class _Batch:
    """A submitted chunk: one future, resolved when every unit has its results."""

    future: Future
    results: list[dict[str, AnalyzerResult] | None]
    left: int


@dataclass
class _Task:
    id: int
    jobs: list[_Job]
    deadline_s: float = 0.0  # seconds allowed (0: none)
    alone: bool = False  # an isolated retry: runs on an idle worker, with nothing beside it


@dataclass
class _Busy:
    task: _Task
    started: float
    phase: tuple[str, str] | None = None
    phased: float = 0.0  # when ``phase`` was last reported (the latest one tells what a death hit)


def failure(name: str, reason: str) -> AnalyzerResult:
    """An ``error`` result for analyzer ``name`` (version and parameter hash of its defaults are
    replaced by the coordinator's instance at merge time, see :func:`stamp`)."""
    return AnalyzerResult(status="error", error=reason, version=registry.get(name).version)


def dependents(name: str, due: tuple[str, ...]) -> set[str]:
    """``name`` and every analyzer in ``due`` that requires it, directly or not."""
    out = {name}
    changed = True
    while changed:
        changed = False
        for n in due:
            if n not in out and set(registry.get(n).requires) & out:
                out.add(n)
                changed = True
    return out


class Supervisor:
    """Runs tasks on the slots of ``backend`` with fault isolation; see the module docstring.

    ``slots`` workers are started at once, each given up to ``depth`` tasks at a time. ``label``
    names the stage in logs (``CPU``, ``GPU lane``).
    """

    def __init__(self, backend: Backend, slots: int, *, label: str = "worker", depth: int = 1) -> None:
        self.backend = backend
        self.label = label
        self.depth = max(1, int(depth))
        self._slots: list[Slot] = []
        self._busy: dict[int, dict[int, _Busy]] = {}  # slot index -> {task id: what it computes}
        self._queue: deque[_Task] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._abandon = False
        self._next_id = 0
        self._batches: set[_Batch] = set()  # submitted, not complete
        self._reported: dict[int, bool] = {}  # slot index -> its current worker reported something
        self._startup_failures = 0  # in a row
        self._setup_deaths: dict[str, int] = {}
        self._broken: dict[str, str] = {}  # analyzer -> reason (its setup kills workers)
        self.deaths = 0  # workers lost so far (for tests and logs)
        for i in range(max(1, slots)):
            slot = backend.new_slot(i)
            slot.start()
            self._slots.append(slot)
        self._thread = threading.Thread(target=self._loop, name=f"mirflow-{label}-supervisor",
                                        daemon=True)
        self._thread.start()

    # -- public ------------------------------------------------------------------------------
    def submit(self, units: list[WorkUnit]) -> "Future[list[dict[str, AnalyzerResult]]]":
        fut: Future = Future()
        batch = _Batch(fut, [None] * len(units), len(units))
        jobs = [_Job(batch, i, u) for i, u in enumerate(units)]
        if not units:
            fut.set_result([])
            return fut
        with self._lock:
            if self._closing:
                raise RuntimeError(f"{self.label} supervisor is shut down")
            self._batches.add(batch)
            self._queue.append(self._task(jobs))
        self._wake.set()
        return fut

    def shutdown(self, *, cancel: bool = False, timeout: float = 10.0) -> None:
        """Stop: with ``cancel`` kill the workers now (queued and in-flight work is abandoned and
        its futures cancelled), else let queued work finish first."""
        with self._lock:
            self._closing = True
            self._abandon = cancel
        self._wake.set()
        self._thread.join()
        for slot in self._slots:
            if cancel:
                slot.kill()
            slot.close(timeout)
        close_backend = getattr(self.backend, "close", None)
        if close_backend is not None:
            close_backend()

    # -- bookkeeping -------------------------------------------------------------------------
    def _task(self, jobs: list[_Job], *, alone: bool = False) -> _Task:
        self._next_id += 1
        limit = sum(j.unit.timeout for j in jobs) if all(j.unit.timeout > 0 for j in jobs) else 0.0
        return _Task(self._next_id, jobs, limit, alone)

    def _complete(self, job: _Job, results: dict[str, AnalyzerResult]) -> None:
        batch = job.batch
        batch.results[job.index] = {**results, **job.decided}
        batch.left -= 1
        if batch.left == 0:
            self._batches.discard(batch)
            if not batch.future.done():
                batch.future.set_result(batch.results)

    def _jobs_in_flight(self) -> list[_Job]:
        return [j for running in self._busy.values() for b in running.values() for j in b.task.jobs]

    def _strip_broken(self, job: _Job) -> bool:
        """Fail the analyzers whose setup kills workers; True when nothing is left to run."""
        for name, reason in self._broken.items():
            if name in job.unit.due:
                for n in dependents(name, job.unit.due):
                    job.decided[n] = failure(n, reason if n == name else
                                             f"requires {name}, which did not succeed on this track")
                job.unit = replace(job.unit, due=tuple(n for n in job.unit.due if n not in job.decided))
        return not job.unit.due

    # -- the supervisor thread ---------------------------------------------------------------
    def _loop(self) -> None:
        """The supervisor thread. Should it fail itself (e.g. no process can be started), every
        waiting chunk gets the error, so the coordinator records it per track instead of hanging."""
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported through the futures
            log.exception("%s supervisor failed", self.label)
            with self._lock:
                self._closing = True
                self._queue.clear()
                self._busy.clear()
                batches, self._batches = list(self._batches), set()
            error = RuntimeError(f"{self.label} supervisor failed: {type(exc).__name__}: {exc}")
            for batch in batches:
                if not batch.future.done():
                    batch.future.set_exception(error)
            for slot in self._slots:
                try:
                    slot.kill()
                except Exception:  # noqa: BLE001
                    pass

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._abandon or (self._closing and not self._queue and not self._busy):
                    break
                self._dispatch()
            busy_slots = [self._slots[i] for i in self._busy]
            if not busy_slots:
                self._wake.wait(POLL_S)
                self._wake.clear()
                continue
            for slot, event in self.backend.poll(busy_slots, POLL_S):
                self._handle(self._slots.index(slot), event)
            self._check_deadlines()
        if self._abandon:
            with self._lock:
                pending = [j for t in self._queue for j in t.jobs]
                pending += self._jobs_in_flight()
                self._queue.clear()
                self._busy.clear()
            for job in pending:
                job.batch.future.cancel()

    def _share_cores(self) -> None:
        """Tell a backend that lends idle workers' cores to busy ones (elastic threads, local
        processes) which slots are busy now."""
        share = getattr(self.backend, "share_cores", None)
        if share is not None:
            share(self._slots, sorted(self._busy))

    def _dispatch(self) -> None:
        """Give queued tasks to free workers; the thread allowances are published every time,
        before a task is sent and at the end (workers may have finished since the last call)."""
        for i, slot in enumerate(self._slots):
            while self._queue and not getattr(slot, "retired", False):  # retired: no room left for it
                running = self._busy.get(i, {})
                if running and (len(running) >= self.depth or self._queue[0].alone
                                or any(b.task.alone for b in running.values())):
                    break
                task = self._queue.popleft()
                if self._broken:
                    runnable = []
                    for job in task.jobs:
                        if self._strip_broken(job):
                            self._complete(job, {})
                        else:
                            runnable.append(job)
                    task.jobs = runnable
                    if not task.jobs:
                        continue
                self._busy.setdefault(i, {})[task.id] = _Busy(task, time.monotonic())
                self._share_cores()  # the busy workers give threads back before the new one starts
                try:
                    slot.send(task.id, [j.unit for j in task.jobs])
                except Exception as exc:  # noqa: BLE001 - e.g. a unit that cannot be pickled
                    self._done(i, task.id)
                    for job in task.jobs:
                        self._complete(job, {n: failure(n, f"could not be sent to a worker: {exc}")
                                             for n in job.unit.due})
        self._share_cores()

    def _done(self, index: int, task_id: int) -> _Busy | None:
        """Forget task ``task_id`` of slot ``index``; what it was (None when unknown)."""
        running = self._busy.get(index, {})
        busy = running.pop(task_id, None)
        if not running:
            self._busy.pop(index, None)
        return busy

    def _handle(self, index: int, event: Event) -> None:
        running = self._busy.get(index)
        if not running or (event.task is not None and event.task not in running):
            return  # a late message from a task already given up
        if event.kind != "died":
            self._reported[index] = True
            self._startup_failures = 0
        if event.kind == "died":
            self._lost(index, str(event.data), timed_out=False)
            return
        if event.task is None:  # a backend that does not say which task: the only one in flight
            if len(running) != 1:
                return
            event.task = next(iter(running))
        busy = running[event.task]
        if event.kind == "phase":
            # start-up, model loading and waiting for a decoded track are not the track's time
            if busy.phase is None or busy.phase[0] in ("setup", "decode"):
                busy.started = time.monotonic()
            busy.phase = tuple(event.data)
            busy.phased = time.monotonic()
            return
        if event.kind == "result":
            self._done(index, event.task)
            for job, res in zip(busy.task.jobs, event.data):
                self._complete(job, res)
            return
        if event.kind == "error":  # the task raised in the worker (not an analyzer error)
            self._done(index, event.task)
            for job in busy.task.jobs:
                self._complete(job, {n: failure(n, f"worker failed: {event.data}")
                                     for n in job.unit.due})

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for index, running in list(self._busy.items()):
            for busy in list(running.values()):
                limit = busy.task.deadline_s
                fresh = busy.phase is None and not getattr(self._slots[index], "ready", False)
                grace = START_GRACE_S if fresh else 0.0  # a fresh worker is still importing
                if limit and now - busy.started > limit + grace:
                    last_phase = getattr(self.backend, "last_phase", None)  # backends that post phases
                    posted = last_phase(self._slots[index]) if last_phase is not None else None
                    if posted is not None and len(running) == 1:
                        busy.phase = tuple(posted.data)
                    self._slots[index].kill()
                    self._lost(index, f"timed out after {limit:.0f} s", timed_out=True)
                    break  # every task of this worker was handled by _lost

    def _restart(self, index: int) -> None:
        """Start a new worker in slot ``index``; a start that fails is tried again a few times
        (e.g. a cluster that briefly refuses a new actor) before the supervisor gives up."""
        for attempt in range(1, MAX_STARTUP_FAILURES + 1):
            try:
                self._slots[index].start()
                return
            except Exception as exc:  # noqa: BLE001 - the last one fails the supervisor
                log.warning("%s %d could not be started (%s: %s), attempt %d", self.label, index,
                            type(exc).__name__, exc, attempt)
                if attempt == MAX_STARTUP_FAILURES:
                    raise
                time.sleep(0.5 * attempt)

    def _lost(self, index: int, reason: str, *, timed_out: bool) -> None:
        """The worker of slot ``index`` died (or was killed for overrunning): replace it, then
        isolate, retry or fail the units it had in flight."""
        self.deaths += 1
        running = list(self._busy.pop(index, {}).values())
        jobs = [j for b in running for j in b.task.jobs]
        latest = max(running, key=lambda b: b.phased, default=None)
        step, analyzer = (latest.phase if latest is not None and latest.phase else ("", ""))
        log.warning("%s %d lost (%s) with %d track(s) in flight%s", self.label, index, reason,
                    len(jobs), f" during {step} {analyzer}".rstrip() if step else "")
        try:
            self._slots[index].kill()
        except Exception:  # noqa: BLE001 - it is gone either way
            pass
        started = self._reported.get(index) or getattr(self._slots[index], "ready", False)
        self._reported[index] = False
        if not started and not timed_out:  # it never started: not these tracks' fault
            self._startup_failures += 1
            if self._startup_failures >= MAX_STARTUP_FAILURES:
                raise RuntimeError(f"{self.label} cannot be started ({reason.replace(' while analysing this track', '')}, "
                                   f"{self._startup_failures} times in a row)")
            with self._lock:
                if not self._abandon:
                    self._restart(index)
                self._requeue(running)
            return
        with self._lock:
            if not self._abandon:
                self._restart(index)  # a fresh worker: its analyzers are set up again
        if step == "setup" and analyzer and not timed_out:
            self._setup_deaths[analyzer] = self._setup_deaths.get(analyzer, 0) + 1
            if self._setup_deaths[analyzer] >= MAX_DEATHS:
                self._broken[analyzer] = f"setup failed: {reason.replace(' while analysing this track', '')}"
                log.error("%s: %s", analyzer, self._broken[analyzer])
            with self._lock:  # not these tracks' fault: run them again as they were
                self._requeue(running)
            return
        retry: list[_Job] = []
        alone = len(jobs) == 1
        # several analyzers ran side by side ("a+b"): which one is at fault is not known yet
        unnamed = "+" in analyzer
        for job in jobs:
            job.deaths += 1
            solo = job.unit.solo
            job.unit = replace(job.unit, solo=True)  # retried one analyzer at a time: a death names it
            if not alone:
                retry.append(job)  # isolate: one unit per task, alone on its worker, from now on
            elif unnamed and not solo:
                retry.append(job)  # once more, one at a time, even after a time-out
            elif timed_out or job.deaths >= MAX_DEATHS:
                if self._blame(job, analyzer, reason):
                    retry.append(job)
            else:
                retry.append(job)  # died once alone: maybe another worker's fault (memory), once more
        with self._lock:
            for job in reversed(retry):
                self._queue.appendleft(self._task([job], alone=True))

    def _requeue(self, running: list[_Busy]) -> None:
        """Put the tasks a lost worker had in flight back at the head of the queue, as they were
        (same jobs, same isolation), in their original order. Call with the lock held."""
        for busy in reversed(running):
            self._queue.appendleft(self._task(busy.task.jobs, alone=busy.task.alone))

    def _blame(self, job: _Job, analyzer: str, reason: str) -> bool:
        """Fail the analyzer that was running on ``job`` (and what requires it); True when other
        due analyzers remain and deserve one more (isolated) try without it."""
        due = job.unit.due
        if analyzer in due and len(dependents(analyzer, due)) < len(due) and job.deaths <= MAX_DEATHS:
            for n in dependents(analyzer, due):
                job.decided[n] = failure(n, reason if n == analyzer else
                                         f"requires {analyzer}, which did not succeed on this track")
            job.unit = replace(job.unit, due=tuple(n for n in due if n not in job.decided))
            job.deaths = MAX_DEATHS  # one more death and everything left fails
            return True
        for n in due:
            job.decided[n] = failure(n, reason)
        job.unit = replace(job.unit, due=())
        self._complete(job, {})
        return False
