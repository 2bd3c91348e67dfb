"""The GPU lane's process: one process owning the GPU analyzers, computing its tracks as a stream.

Started like the CPU workers (:func:`mirflow.executors.process.spawn_worker`: thread pools pinned,
parent-death signal and watchdog), but its loop differs: :func:`lane_main` takes every task the
supervisor sends while earlier ones are still being computed (the supervisor keeps up to
:data:`LANE_WINDOW` in flight) and gives them to a :class:`~mirflow.run.stream.StreamWorker`, whose
threads decode, run the models and hand on or write each track, and report each task as soon as its
tracks are done. Messages to the coordinator (phases, results) leave from several threads, one at a
time.
"""

from __future__ import annotations

import logging
import threading
from multiprocessing.connection import Connection
from typing import Any

from ..run.stream import StreamWorker
from ..run.worker import AnalyzerSpec, Worker
from .process import start_child

log = logging.getLogger(__name__)

#: Tasks (tracks) the supervisor keeps in flight on the GPU lane. Only the tracks within the
#: lane's memory budget are decoded (:mod:`mirflow.run.stream`); the others wait undecoded.
LANE_WINDOW = 16


def lane_main(conn: Connection, parent_pid: int, specs: list[AnalyzerSpec], device: str,
              threads: int, log_level: int, held_budget: float = 0.0) -> None:
    """The loop of the GPU lane's process: receive ``(task_id, units)`` and hand them to the
    stream; ``None`` (or the coordinator gone) ends it after the tasks received are done."""
    limits = start_child(parent_pid, threads, log_level)  # noqa: F841 - kept for the process's life
    from .. import analyzers as registry

    registry.available_names()  # import the analyzer modules now, not on the first track's time
    lock = threading.Lock()

    def send(kind: str, task_id: int, data: Any) -> None:
        with lock:
            conn.send((kind, task_id, data))

    stream = StreamWorker(Worker(specs, device=device, threads=threads), send, held_budget=held_budget)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the coordinator is gone: nobody to report to
        if msg is None:
            break
        task_id, units = msg
        try:
            stream.submit(task_id, units)
        except Exception as exc:  # noqa: BLE001 - reported for the whole task
            from ..run.worker import describe

            send("error", task_id, describe(exc))
    stream.close()
