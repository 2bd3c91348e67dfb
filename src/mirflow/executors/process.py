"""Worker processes on this machine, managed one by one (the local executor's backend).

Each worker is a ``spawn``-ed process holding one :class:`~mirflow.run.worker.Worker` (analyzers set
up once per process) and a duplex pipe to the coordinator. It computes one task at a time and
reports, besides the results, which step it is in (``decode``, ``setup NAME``, ``analyze NAME``),
so when it dies the supervisor knows which analyzer was running.

Thread pools: every BLAS/OpenMP/numba/torch pool is pinned before the child imports any numeric
library (environment variables given to the child at start, plus ``threadpoolctl`` in it).

Elastic threads: each process also gets a shared integer, its *thread allowance*, which the backend
rewrites whenever the number of busy workers changes (:meth:`ProcessBackend.share_cores`: the core
budget divided among the busy workers, :func:`mirflow.core.threads.shares`). The worker reads it at
natural points (before each analyzer call; separation between forward passes) and applies it, so
the cores of idle workers are used by the busy ones at the tail of a run or on a long track, and
given back when new work arrives. It is a value in shared memory rather than a message because the
pipe carries one request and its answer at a time, and a busy worker reads nothing from it.

No orphans: a worker exits within about a second of its coordinator's death, however the
coordinator died (SIGKILL included). On Linux the kernel sends it SIGKILL (``prctl(PR_SET_PDEATHSIG)``,
set through ctypes at start); everywhere a watchdog thread also polls the parent process id and
ends the worker when it changes. (Linux ties that signal to the parent *thread*: replacements are
started by the supervisor thread, which lives until the executor is shut down, so a replacement is
also stopped when its supervisor ends.)
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any

from ..core import shared
from ..core.threads import shares
from ..run.worker import AnalyzerSpec, WorkUnit, Worker, describe
from .supervisor import Event, death_reason

log = logging.getLogger(__name__)

#: Variables that size the thread pools of OpenBLAS, MKL, OpenMP, Apple Accelerate, numexpr and numba.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")
_PR_SET_PDEATHSIG = 1
WATCHDOG_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid`` ends (kernel signal on Linux, watchdog thread
    everywhere). Call first thing in a child process."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="mirflow-parent-watchdog", daemon=True).start()


def start_child(parent_pid: int, threads: int, log_level: int) -> Any:
    """What every mirflow child process (CPU worker, GPU lane) does first: exit with its parent,
    leave Ctrl-C to the coordinator, take the parent's logging settings (-v/-vv/--log-file,
    third-party loggers quiet), and pin the BLAS/OpenMP pools to ``threads``. Returns the
    ``threadpoolctl`` limits, to be kept for the life of the process."""
    die_with_parent(parent_pid)
    shared.set_owner(parent_pid)  # shared-memory hand-offs are swept by the coordinator
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides how to stop
    from ..core.logsetup import configure_from_env

    configure_from_env(log_level)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def import_analyzers() -> None:
    """A worker's imports before its first task: the analyzer modules (now, not on the first
    track's time), with the SciPy packages they never call deferred (``core.imports``)."""
    from .. import analyzers as registry
    from ..core import imports

    for name in imports.IN_WORKERS:
        imports.defer(name)
    registry.available_names()


def worker_main(conn: Connection, parent_pid: int, specs: list[AnalyzerSpec], device: str,
                threads: int, log_level: int, allowance: Any = None, cores: int = 0) -> None:
    """The loop of one worker process: receive ``(task_id, units)``, send back events.

    ``allowance`` (a shared ``c_int``) and ``cores`` make the process elastic (module docstring):
    it may use up to ``cores`` threads, as many as ``allowance`` says at the moment."""
    limits = start_child(parent_pid, threads, log_level)  # noqa: F841 - kept for the process's life
    if allowance is not None and cores > threads:
        from ..core import threads as core_threads

        core_threads.install(lambda: allowance.value, cores)
    task_id: list[int | None] = [None]

    def phase(step: str, name: str) -> None:
        conn.send(("phase", task_id[0], (step, name)))

    import_analyzers()
    worker = Worker(specs, device=device, threads=threads, on_phase=phase)
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # the coordinator is gone
            if msg is None:
                break
            task_id[0], units = msg
            try:
                results = worker.process(units)
                conn.send(("result", task_id[0], results))
            except BaseException as exc:  # noqa: BLE001 - reported for the whole task
                conn.send(("error", task_id[0], describe(exc)))
    finally:
        worker.close()
        gc.freeze()  # the process exits next: no collector pass over every object (tenths of a s)


_MAIN_SCRIPT = threading.Lock()


@contextmanager
def main_script_hidden() -> Iterator[None]:
    """While a child is started: keep multiprocessing from running mirflow's console script again.

    The ``spawn`` start method runs the parent's main *script* (one without a module name, as the
    ``mirflow`` executable that pip writes) in the child, as ``__mp_main__``; that one only imports
    the command line, 0.3 s of imports a worker never uses. When the main module is that script
    (its ``main`` is :func:`mirflow.cli.main`), its ``__file__`` is hidden for the call. Any other
    main module (a user's script calling the library) is left to multiprocessing as usual."""
    main = sys.modules.get("__main__")
    cli = sys.modules.get("mirflow.cli")
    if (main is None or cli is None or getattr(main, "__spec__", None) is not None
            or getattr(main, "main", None) is not getattr(cli, "main", object())):
        yield
        return
    with _MAIN_SCRIPT:  # workers may be started from the supervisor's thread too
        path = main.__dict__.pop("__file__", None)
        try:
            yield
        finally:
            if path is not None:
                main.__file__ = path


def spawn_worker(specs: list[AnalyzerSpec], device: str, threads: int, name: str,
                 cores: int = 0, main: Callable[..., None] | None = None,
                 extra: tuple[Any, ...] = ()) -> tuple[Any, Connection, Any]:
    """Start one worker process running ``main`` (default :func:`worker_main`; the GPU lane's is
    :func:`mirflow.executors.gpu_lane.lane_main`, given ``extra`` arguments); returns it, the
    coordinator's end of its pipe and its thread allowance (a shared ``c_int``, starting at
    ``threads``; :func:`worker_main` is elastic up to ``cores`` when ``cores > threads``)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=True)
    allowance = ctx.RawValue("i", threads)
    saved = {k: os.environ.get(k) for k in THREAD_ENV_VARS}
    for k in THREAD_ENV_VARS:  # inherited by the spawned child before it imports numpy
        os.environ[k] = str(threads)
    try:
        proc = ctx.Process(target=main or worker_main, name=name, daemon=True,
                           args=(child, os.getpid(), specs, device, threads,
                                 logging.getLogger().getEffectiveLevel(),
                                 *((allowance, cores) if main is None else extra)))
        with main_script_hidden():
            proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    child.close()
    return proc, parent, allowance


class ProcessSlot:
    """One worker process (restartable) and the coordinator's end of its pipe."""

    def __init__(self, index: int, backend: "ProcessBackend") -> None:
        self.index = index
        self.backend = backend
        self.label = backend.label
        self.proc: Any = None
        self.conn: Connection | None = None
        self.allowance: Any = None  # the worker's shared thread allowance (spawn_worker)
        self.starts = 0

    def start(self) -> None:
        """Start this slot's worker: a warm spare when one is ready (after the first loss), else a
        new process."""
        spare = self.backend.take_spare() if self.starts else None
        self.proc, self.conn, self.allowance = spare or self.backend.spawn(f"{self.index}")
        if self.starts:
            self.backend.keep_spare()  # the next replacement is ready at once
        self.starts += 1

    def send(self, task_id: int, units: list[WorkUnit]) -> None:
        if self.proc is None or not self.proc.is_alive():
            self.kill()
            self.start()
        try:
            assert self.conn is not None
            self.conn.send((task_id, units))
        except (BrokenPipeError, OSError) as exc:  # it died between the check and the send
            log.debug("send to %s %d failed: %s", self.label, self.index, exc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.is_alive() and self.conn is not None:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def exitcode(self) -> int | None:
        return None if self.proc is None else self.proc.exitcode


class ProcessBackend:
    """:class:`~mirflow.executors.supervisor.Backend` of local worker processes.

    After the first worker is lost it keeps one *spare* process started (libraries imported,
    analyzers not set up: no model memory), so later replacements take over at once instead of
    paying the interpreter and import start-up again (seconds) for every crash.
    """

    def __init__(self, specs: list[AnalyzerSpec], *, device: str, threads: int = 1,
                 label: str = "worker", cores: int = 0, main: Callable[..., None] | None = None,
                 extra: tuple[Any, ...] = ()) -> None:
        self.specs = specs
        self.main = main  # the process's loop (None: worker_main)
        self.extra = extra
        self.device = device
        self.threads = threads
        self.label = label
        #: Core budget shared by this backend's busy workers (elastic threads); at most ``threads``
        #: per worker when not larger than that.
        self.cores = cores
        self._spare: tuple[Any, Connection, Any] | None = None
        self._spawned = 0

    def new_slot(self, index: int) -> ProcessSlot:
        return ProcessSlot(index, self)

    def spawn(self, name: str) -> tuple[Any, Connection, Any]:
        self._spawned += 1
        return spawn_worker(self.specs, self.device, self.threads, f"mirflow-{self.label}-{name}",
                            self.cores, self.main, self.extra)

    def share_cores(self, slots: list[ProcessSlot], busy: list[int]) -> None:
        """Publish each worker's thread allowance: the core budget divided among the busy slots
        (``busy``: their indices, in ``slots``' order), ``threads`` for the idle ones. Called by the
        supervisor whenever the busy set changes, before a task is sent."""
        if self.cores <= self.threads:
            return  # not elastic: every worker keeps the threads it started with
        given = dict(zip(busy, shares(self.cores, len(busy))))
        for i, slot in enumerate(slots):
            if slot.allowance is not None:
                n = given.get(i, self.threads)
                if slot.allowance.value != n:
                    slot.allowance.value = n

    def take_spare(self) -> tuple[Any, Connection, Any] | None:
        spare, self._spare = self._spare, None
        if spare is not None and spare[0].is_alive():
            return spare
        if spare is not None:
            spare[1].close()
        return None

    def keep_spare(self) -> None:
        if self._spare is None:
            self._spare = self.spawn("spare")

    def close(self) -> None:
        """Stop the spare process (the slots are closed by the supervisor)."""
        spare, self._spare = self._spare, None
        if spare is not None:
            proc, conn, _allowance = spare
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            conn.close()

    def poll(self, slots: list[ProcessSlot], timeout: float) -> list[tuple[ProcessSlot, Event]]:
        by_handle: dict[Any, ProcessSlot] = {}
        for s in slots:
            if s.conn is not None:
                by_handle[s.conn] = s
            if s.proc is not None:
                by_handle[s.proc.sentinel] = s
        if not by_handle:
            time.sleep(timeout)
            return []
        events: list[tuple[ProcessSlot, Event]] = []
        ready = wait(list(by_handle), timeout)
        seen: set[int] = set()
        for handle in ready:
            slot = by_handle[handle]
            if id(slot) in seen:
                continue
            seen.add(id(slot))
            events.extend((slot, e) for e in self._drain(slot))
        return events

    @staticmethod
    def _drain(slot: ProcessSlot) -> list[Event]:
        """Every message waiting from ``slot``; a ``died`` event when its process has ended."""
        out: list[Event] = []
        conn = slot.conn
        while conn is not None:
            try:
                if not conn.poll():
                    break
                kind, task, data = conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # noqa: BLE001 - a result that does not unpickle
                out.append(Event("error", f"result could not be received: {describe(exc)}"))
                break
            out.append(Event(kind, data, task))
            if kind in ("result", "error"):
                break
        if not out or out[-1].kind == "phase":
            proc = slot.proc
            if proc is not None and not proc.is_alive():
                proc.join(1)
                out.append(Event("died", death_reason(proc.exitcode)))
        return out
