"""The GPU lane's pipeline: tracks flow through decode, the models and the hand-off without draining.

A :class:`StreamWorker` holds the GPU analyzers of one process (the local executor's *GPU lane*,
:mod:`mirflow.executors.gpu_lane`) and computes every track it is given as a stream, in threads:

1. **decode** (:data:`DECODE_THREADS` threads): each track is decoded (its only decode in the run)
   and the GPU analyzers' :meth:`~mirflow.analyzers.base.Analyzer.prepare` step runs on it (the
   model input at the model's rate, the VGGish front end), ahead of the models;
2. **one thread per GPU analyzer**, in run order: an analyzer that offers
   ``analyze_stream(ctxs) -> iterator of (ctx, result)`` (separation: segments of consecutive
   tracks share forward passes) is fed the decoded tracks as they become ready, for as long as
   more are on their way; any other analyzer gets whatever tracks are ready (a batch of them when
   it batches). A stream is only ended (its last partial batch run) when nothing upstream is in
   progress, so the device waits at no chunk boundary: it waits only when no track is ready;
3. **finish** (:data:`FINISH_THREADS` threads): a track whose CPU analyzers are due is handed on
   (the decoded mix and the stems still to be written, :class:`~mirflow.run.worker.Decoded`): a CPU
   worker writes the stems and runs the CPU analyzers on both in memory; otherwise the stems are
   written here. Then the track's results are reported, each task as soon as its tracks are done.

**Memory.** A track *holds* memory from the start of its decode until its results are sent: the
decoded mix, the model input and the stems (:func:`mirflow.run.limits.held_bytes`, from the header:
duration x sample rate x channels, four stereo stems for separation). A decode starts only while
the bytes held stay within ``held_budget`` (the lane's share of ``--max-memory``,
:func:`mirflow.run.limits.lane_budget`), or when nothing is held at all (the floor: one track), so
the tracks decoded ahead and those waiting to be written or handed on never exceed it, whatever the
number of tracks given. A stream whose next track cannot be decoded for memory is ended, so the
tracks it holds finish and free their share: the budget can slow the lane, never stop it.

With ``$MIRFLOW_LANE_LOG`` set (tests), every hold and release is appended to that file as
``hold|release PID TRACKS_HELD BYTES_HELD BUDGET TRACKS_IN_LANE TRACK`` (the tracks in the lane
include those given to it and not yet decoded).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.audio import TrackContext
from ..core.errors import DecodeError
from ..core.sidecar import AnalyzerResult
from . import limits
from .worker import HANDOFF, Decoded, ShippedTrack, WorkUnit, Worker, describe

log = logging.getLogger(__name__)

#: Threads decoding (and preparing) upcoming tracks.
DECODE_THREADS = 2
#: Threads writing stems and sending finished tracks.
FINISH_THREADS = 2
#: Most tracks given at once to an analyzer without ``analyze_stream`` (a batch when it batches).
MAX_GROUP = 8
#: Environment variable naming a file that receives every hold and release (see the module docstring).
LANE_LOG_ENV = "MIRFLOW_LANE_LOG"

#: ``send(kind, task_id, data)``: a message for the supervisor (``phase``, ``result``, ``error``).
Send = Callable[[str, int, Any], None]


@dataclass(eq=False)
class _Item:
    """One track in the lane."""

    task: int
    unit: WorkUnit
    held: int
    ctx: TrackContext | None = None
    results: dict[str, AnalyzerResult] = field(default_factory=dict)


@dataclass(eq=False)
class _Task:
    items: list[_Item]
    left: int


class StreamWorker:
    """The pipeline of the module docstring around ``worker`` (the lane's analyzers, set up once).

    ``submit`` returns at once; results go out through ``send`` as tasks finish. ``held_budget``:
    bytes of tracks held at once (0: no bound).
    """

    def __init__(self, worker: Worker, send: Send, *, held_budget: float = 0.0) -> None:
        self.worker = worker
        self.names = list(worker.order)
        self.held_budget = float(held_budget)
        self._send = send
        self._cond = threading.Condition()
        self._intake: deque[_Item] = deque()
        # queues[k]: tracks waiting for analyzer k; queues[-1]: tracks waiting to be finished
        self._queues: list[deque[_Item]] = [deque() for _ in range(len(self.names) + 1)]
        self._active = [0] * len(self.names)  # tracks taken by analyzer k and not yet given back
        self._decoding = 0
        self._held = 0
        self._held_items = 0
        self.peak_items = 0  # most tracks held at once (for tests and logs)
        self._tasks: dict[int, _Task] = {}
        self._stop = False
        self._preparers: dict[str, Any] = {}
        self._log_path = os.environ.get(LANE_LOG_ENV)
        self._threads = [threading.Thread(target=self._decode_loop, name=f"mirflow-lane-decode-{i}",
                                          daemon=True) for i in range(DECODE_THREADS)]
        self._threads += [threading.Thread(target=self._stage_loop, args=(k,), daemon=True,
                                           name=f"mirflow-lane-{name}") for k, name in enumerate(self.names)]
        self._threads += [threading.Thread(target=self._finish_loop, name=f"mirflow-lane-finish-{i}",
                                           daemon=True) for i in range(FINISH_THREADS)]
        for t in self._threads:
            t.start()

    # -- public ------------------------------------------------------------------------------
    def submit(self, task_id: int, units: list[WorkUnit]) -> None:
        """Take the tracks of one task; its results are sent when all of them are done."""
        items = [_Item(task_id, u, limits.held_bytes(limits.audio_info(u.track.mix), u.due))
                 for u in units]
        with self._cond:
            if not items:
                self._send("result", task_id, [])
                return
            self._tasks[task_id] = _Task(items, len(items))
            self._intake.extend(items)
            self._cond.notify_all()

    def close(self) -> None:
        """Finish every task given, then stop the threads and tear the analyzers down."""
        with self._cond:
            while self._tasks:
                self._cond.wait(0.5)
            self._stop = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(5)
        self.worker.close()

    # -- bookkeeping (under self._cond) -------------------------------------------------------
    def _note(self, event: str, item: _Item) -> None:
        if self._log_path:
            in_lane = sum(t.left for t in self._tasks.values())
            line = (f"{event} {os.getpid()} {self._held_items} {self._held} {int(self.held_budget)} "
                    f"{in_lane} {item.unit.track.dir.name}\n")
            fd = os.open(self._log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    def _admissible(self) -> bool:
        if not self._intake:
            return False
        return (not self._held_items or not self.held_budget
                or self._held + self._intake[0].held <= self.held_budget)

    def _place(self, item: _Item, after: int) -> None:
        """Queue ``item`` for the next analyzer due on it after stage ``after`` (-1: decode), else
        for the finish threads."""
        for k in range(after + 1, len(self.names)):
            if self.names[k] in item.unit.due:
                self._queues[k].append(item)
                break
        else:
            self._queues[-1].append(item)
        self._cond.notify_all()

    def _upstream_busy(self, k: int) -> bool:
        """Whether a track may still reach analyzer ``k`` without a new decode being admitted."""
        return bool(self._decoding or any(self._active[j] or self._queues[j] for j in range(k)))

    def _next(self, k: int, *, block: bool) -> _Item | None:
        """The next track for analyzer ``k``: waits while one may still come (``block``); None
        when none will without more memory being freed (or none is ready, without ``block``)."""
        name = self.names[k]
        with self._cond:
            while True:
                if self._queues[k]:
                    item = self._queues[k].popleft()
                    missing = self.worker._missing_requirement(name, item.unit, item.results)
                    if missing:
                        item.results[name] = self.worker._result(name, "blocked", note=missing)
                        self._place(item, k)
                        continue
                    self._active[k] += 1
                    return item
                if not block or self._stop or not self._upstream_busy(k):
                    return None
                self._cond.wait()

    def _passed(self, item: _Item, k: int) -> None:
        with self._cond:
            self._active[k] -= 1
            self._place(item, k)

    # -- threads -------------------------------------------------------------------------------
    def _decode_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._admissible():
                    self._cond.wait()
                if self._stop:
                    return
                item = self._intake.popleft()
                self._held += item.held
                self._held_items += 1
                self.peak_items = max(self.peak_items, self._held_items)
                self._decoding += 1
                self._note("hold", item)
            try:
                self._decode(item)
            finally:
                with self._cond:
                    self._decoding -= 1
                    self._place(item, -1)

    def _decode(self, item: _Item) -> None:
        """Decode the track and run the due analyzers' ``prepare`` on it. A decode failure travels
        with the track (its analyzers report it); a failed preparation is only logged: the
        analyzer computes it again and reports its error."""
        unit = item.unit
        self._phase(item.task, "decode", "")
        ctx = unit.decoded.context(unit.track.mix) if unit.decoded is not None else TrackContext(unit.track.mix)
        ctx.defer_writes = True  # stems are written by the finish threads or by a CPU worker
        ctx.keep_stems = unit.hand_on
        item.ctx = ctx
        try:
            ctx.audio
        except DecodeError:
            return
        except Exception as exc:  # noqa: BLE001 - reported by the analyzers, which decode again
            log.debug("decoding %s failed: %s", unit.track.dir, describe(exc))
            return
        for name in self.names:
            if name not in unit.due:
                continue
            try:
                prep = self._preparers.get(name)
                if prep is None:
                    prep = self._preparers[name] = self.worker.specs[name].build()
                prep.prepare(ctx)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                log.debug("prepare %s failed on %s: %s", name, unit.track.dir, describe(exc))

    def _stage_loop(self, k: int) -> None:
        name = self.names[k]
        while True:
            with self._cond:
                while not self._stop and not self._queues[k]:
                    self._cond.wait()
                if self._stop:
                    return
                head = self._queues[k][0]
            if name not in self.worker._analyzers and name not in self.worker._setup_errors:
                self._phase(head.task, "setup", name)
            analyzer = self.worker.analyzer_or_none(name)
            if analyzer is not None and callable(getattr(analyzer, "analyze_stream", None)):
                self._run_stream(k, analyzer)
            else:
                self._run_group(k)

    def _run_group(self, k: int) -> None:
        """Whatever tracks are ready for analyzer ``k`` (at least one), at once."""
        name = self.names[k]
        first = self._next(k, block=True)
        if first is None:
            return
        group = [first]
        while len(group) < MAX_GROUP:
            more = self._next(k, block=False)
            if more is None:
                break
            group.append(more)
        for item in group:
            self._phase(item.task, "analyze", name)
        self.worker._run_one_analyzer(name, [i.unit for i in group], [i.ctx for i in group],
                                      [i.results for i in group])
        for item in group:
            self._passed(item, k)

    def _run_stream(self, k: int, analyzer: Any) -> None:
        """Feed analyzer ``k``'s ``analyze_stream`` the tracks as they become ready, until none is
        on its way; each track's time is the time since the previous track came out."""
        name = self.names[k]
        taken: dict[int, _Item] = {}

        def source() -> Iterator[TrackContext]:
            while True:
                item = self._next(k, block=True)
                if item is None:
                    return
                self._phase(item.task, "analyze", name)
                taken[id(item.ctx)] = item
                yield item.ctx

        mark = time.perf_counter()
        try:
            for ctx, out in analyzer.analyze_stream(source()):
                item = taken.pop(id(ctx))
                now = time.perf_counter()
                item.results[name] = self.worker._to_result(analyzer, item.unit, ctx, out, now - mark)
                mark = now
                self._passed(item, k)
        except Exception as exc:  # noqa: BLE001 - the stream failed: the tracks it held fail
            log.warning("%s: stream failed (%s) with %d track(s) in it", name, describe(exc), len(taken))
            for item in taken.values():
                item.results[name] = self.worker._to_result(analyzer, item.unit, item.ctx, exc, 0.0)
                self._passed(item, k)

    def _finish_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._queues[-1]:
                    self._cond.wait()
                if self._stop:
                    return
                item = self._queues[-1].popleft()
            try:
                self._finish(item)
            except BaseException as exc:  # noqa: BLE001 - never lose a task: report it failed
                log.exception("finishing %s failed", item.unit.track.dir)
                for name in item.unit.due:
                    if name not in item.results or item.results[name].status == "ok":
                        item.results[name] = self.worker._result(
                            name, "error", error=f"finishing failed: {describe(exc)}")
            self._done(item)

    def _finish(self, item: _Item) -> None:
        """Hand the track on (CPU analyzers due: a CPU worker writes its stems) or write its stems."""
        ctx, res = item.ctx, item.results
        assert ctx is not None
        first = next((n for n in self.names if n in item.unit.due and n in res), None)
        if first is not None:  # decoded by the decode threads: reported with the lane's first result
            res[first].decode_seconds = ctx.decode_seconds
        if item.unit.hand_on:
            decoded = Decoded.of(ctx)
            if decoded is not None:  # its arrays wait in shared memory; the pipes carry a handle
                res[HANDOFF] = ShippedTrack.of(decoded)  # type: ignore[assignment] - taken out by the executor
        else:
            self.worker.write_files(ctx.files_to_write, ctx, item.unit.track.dir, res,
                                    lambda step, name: self._phase(item.task, step, name))
            ctx.files_to_write.clear()
        if ctx.warnings:
            for r in res.values():
                if isinstance(r, AnalyzerResult):
                    r.warnings = list(ctx.warnings)

    def _done(self, item: _Item) -> None:
        """Count ``item`` done; send its task's results when it was the last; free its memory."""
        with self._cond:
            task = self._tasks[item.task]
            task.left -= 1
            last = task.left == 0
        if last:
            try:
                self._send("result", item.task, [i.results for i in task.items])
            except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be pickled
                try:
                    self._send("error", item.task, f"results could not be sent: {describe(exc)}")
                except Exception:  # noqa: BLE001 - the supervisor is gone: the process ends soon
                    pass
        with self._cond:
            items = task.items if last else []
            for i in items:
                i.ctx = None
                i.results = {}
                self._held -= i.held
                self._held_items -= 1
                self._note("release", i)
            if last:
                del self._tasks[item.task]
            self._cond.notify_all()

    def _phase(self, task: int, step: str, name: str) -> None:
        try:
            self._send("phase", task, (step, name))
        except Exception:  # noqa: BLE001 - the supervisor is gone: the process ends soon
            pass
