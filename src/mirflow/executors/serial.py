"""The serial executor: everything in the calling process, one track at a time (for debugging).

Fault isolation applies here only where one process can protect itself:

- an analyzer that raises fails its track, and the run goes on (as everywhere);
- ``--track-timeout`` is enforced with a timer signal (``SIGALRM``, main thread, POSIX): a track that
  hangs in Python code or in an interruptible system call (a stuck read, a sleep) is failed with
  ``timed out after N s``. A hang inside native code that never returns to Python cannot be
  interrupted in-process;
- a crash of native code (segfault), ``os._exit`` or the OOM killer end the whole process by nature.
  Use ``--executor local --workers 1`` for the same one-at-a-time order with every fault isolated.
"""

from __future__ import annotations

import signal
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import replace

from ..core.errors import TrackTimeout
from ..core.sidecar import AnalyzerResult
from ..run.worker import AnalyzerSpec, WorkUnit, Worker
from .supervisor import failure


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise :class:`TrackTimeout` in this (main) thread after ``seconds``; no-op where impossible."""
    usable = (seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TrackTimeout(f"timed out after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class SerialExecutor:
    """Runs each submitted chunk immediately in this process; analyzers are set up once."""

    capacity = 1

    def __init__(self, specs: list[AnalyzerSpec], *, device: str = "auto") -> None:
        self.phase: tuple[str, str] = ("", "")
        self.worker = Worker(specs, device=device, on_phase=self._on_phase)
        self.models_held_once = frozenset(s.name for s in specs)  # one process, one copy of each
        self.models_per_worker: frozenset[str] = frozenset()
        self.workers = 1

    def _on_phase(self, step: str, name: str) -> None:
        self.phase = (step, name)

    def submit(self, units: list[WorkUnit]) -> "Future[list[dict[str, AnalyzerResult]]]":
        fut: Future = Future()
        try:
            if len(units) > 1 and all(u.timeout > 0 for u in units):
                try:  # the chunk together (batching analyzers batch), under the sum of the limits
                    with _alarm(sum(u.timeout for u in units)):
                        fut.set_result(self.worker.process(units))
                        return fut
                except TrackTimeout:
                    pass  # find the culprit: one unit at a time
            fut.set_result([self._one(u) for u in units])
        except Exception as exc:  # noqa: BLE001 - surfaced by the coordinator per track
            fut.set_exception(exc)
        return fut

    def _one(self, unit: WorkUnit) -> dict[str, AnalyzerResult]:
        """One unit under its time limit; on a timeout the running analyzer is failed and the
        analyzers after it are tried once more without it."""
        decided: dict[str, AnalyzerResult] = {}
        for _attempt in range(2):
            try:
                with _alarm(unit.timeout):
                    return {**self.worker.process([unit])[0], **decided}
            except TrackTimeout as exc:
                step, name = self.phase
                blamed = [name] if step == "analyze" and name in unit.due else list(unit.due)
                for n in blamed:
                    decided[n] = failure(n, str(exc))
                unit = replace(unit, due=tuple(n for n in unit.due if n not in decided))
                if not unit.due:
                    break
        for n in unit.due:
            decided.setdefault(n, failure(n, "not run: an earlier analyzer on this track timed out"))
        return decided

    def shutdown(self, *, cancel: bool = False) -> None:
        self.worker.close()
