"""Elastic threads: how many CPU threads a worker process may use *now*.

The local executor gives each worker process one thread per pool at start, so N workers use N cores
without oversubscription. When fewer tracks are in flight than there are cores (the tail of a run,
one long track, fewer tracks than cores), the idle cores would stay idle. So the executor divides
its *core budget* among the workers that are busy (:func:`shares`) and publishes each worker's
share, its *thread allowance*, in a small value shared with that process. The worker reads it at
natural points and applies it:

- before each analyzer call (:class:`mirflow.run.worker.Worker`), through
  :func:`apply_thread_allowance`: torch's intra-op threads of the calling thread and, through
  ``threadpoolctl``, the BLAS and OpenMP pools;
- inside long computations, between steps: separation asks :func:`allowance` before every forward
  pass of the Demucs batching loop, so a long track already running speeds up when a neighbour
  finishes, and gives the threads back when new work arrives.

A process without an installed source (the serial and Ray executors, direct API use) is not
elastic: :func:`allowance` is ``None`` and :func:`apply_thread_allowance` does nothing.

``torch.set_num_threads`` is per thread for torch's OpenMP backend (each thread keeps the count it
had when it first ran a parallel op), so it must be applied in the thread that computes; that is
why the helpers act on the calling thread and remember per thread what they applied.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_source: Callable[[], int] | None = None
_ceiling = 0
_applied = threading.local()


def shares(budget: int, busy: int) -> list[int]:
    """Threads for each of ``busy`` workers out of ``budget`` cores: as even as possible, the first
    ones get the remainder, never less than one each (``shares(2, 1) == [2]``,
    ``shares(2, 2) == [1, 1]``, ``shares(3, 2) == [2, 1]``, ``shares(2, 3) == [1, 1, 1]``)."""
    if busy <= 0:
        return []
    budget = max(1, int(budget))
    base, extra = divmod(budget, busy)
    return [max(1, base + (1 if i < extra else 0)) for i in range(busy)]


def install(source: Callable[[], int], ceiling: int) -> None:
    """Make this process elastic: ``source()`` returns its current allowance (threads), which never
    exceeds ``ceiling`` (the executor's core budget). Called once, first thing in a worker."""
    global _source, _ceiling
    _source, _ceiling = source, max(1, int(ceiling))


def uninstall() -> None:
    """Back to a fixed thread count (for tests)."""
    global _source, _ceiling
    _source, _ceiling = None, 0


def allowance() -> int | None:
    """Threads this process may use now (at least 1, at most :func:`ceiling`); ``None`` when the
    process is not elastic."""
    if _source is None:
        return None
    try:
        value = int(_source())
    except Exception:  # noqa: BLE001 - a broken source must not stop the work: stay at one thread
        log.debug("thread allowance unreadable", exc_info=True)
        return 1
    return max(1, min(value, _ceiling))


def ceiling() -> int:
    """The most threads :func:`allowance` may ever return (0 when the process is not elastic):
    what a computation sizes its thread pools by."""
    return _ceiling if _source is not None else 0


def set_torch_threads(n: int) -> None:
    """Set torch's intra-op threads of the calling thread to ``n`` (nothing when torch is not
    imported: this never imports it). Cheap when unchanged."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def apply_thread_allowance() -> int | None:
    """Apply the current allowance to the calling thread: torch's intra-op threads and, through
    ``threadpoolctl``, the BLAS/OpenMP pools. Returns it (``None`` when not elastic: nothing
    changed). The pools are re-limited only when the allowance differs from what this thread
    applied last (``threadpoolctl`` scans the loaded libraries, about a millisecond). Call it from
    the worker's main thread: OpenBLAS keeps one count for the process, and a count set from
    another thread after that does not always hold."""
    n = allowance()
    if n is None:
        return None
    set_torch_threads(n)
    if getattr(_applied, "n", None) != n:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
        _applied.n = n
        log.debug("thread allowance %d applied", n)
    return n
