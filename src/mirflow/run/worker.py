"""The worker side of a run: analyzers applied to the tracks of one work unit.

A :class:`Worker` owns analyzer instances for the whole life of a worker process (or of the run,
in the serial executor): each analyzer's ``setup()`` runs once, on first use, never per track.
:meth:`Worker.process` takes a chunk of tracks, decodes each once into a
:class:`~mirflow.core.audio.TrackContext`, runs the due analyzers in dependency order (batching across
the chunk for analyzers that batch) and returns one :class:`~mirflow.core.sidecar.AnalyzerResult` per
(track, analyzer). Workers never write sidecars: the process holding the track lease does.

When the worker may use more threads than one (its thread allowance, :mod:`mirflow.core.threads`:
cores that idle workers lend it at the tail of a run, or to the one worker of a one-track run),
analyzers that declare themselves ``concurrent`` and whose requirements are done run at the same
time, each in a thread of its own, on the same contexts (which compute every shared view once,
whoever asks first). Their results and rates are the same as one after another; a unit retried after
its worker died while several ran (``solo``) runs them one after another, so that a second death
names the analyzer at fault.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Any

from .. import analyzers as registry
from ..analyzers.base import Analyzer
from ..core import devices
from ..core.audio import Apart, Audio, TrackContext
from ..core.dataset import Track
from ..core.errors import Blocked, DecodeError, HandOffLost, MirflowError
from ..core.shared import Shipped, ship
from ..core.sidecar import AnalyzerResult
from ..core.threads import allowance, apply_thread_allowance, ceiling, set_torch_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalyzerSpec:
    """How to build one analyzer in a worker: its registry name and parameters (picklable)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Analyzer:
        return registry.get(self.name)(**self.params)


@dataclass(frozen=True)
class WorkUnit:
    """One track and the analyzers due on it; ``ready`` are analyzers already ok in its sidecar."""

    track: Track
    due: tuple[str, ...]
    ready: frozenset[str] = frozenset()
    #: Seconds this unit may take before its worker is replaced and the unit failed (0: no limit).
    timeout: float = 0.0
    #: Estimated peak bytes for analysing this unit (:func:`mirflow.run.limits.memory_needed`; 0: unknown).
    memory: int = 0
    #: The track already decoded by an earlier stage (its analyzers run on it, no decode here);
    #: between processes its arrays may travel apart from the message (:class:`HandedTrack`).
    decoded: "Decoded | HandedTrack | None" = None
    #: Return the decoded track (and stems made in memory) under :data:`HANDOFF` for a later stage.
    hand_on: bool = False
    #: Leave files (stems) to the later stage's worker to write (see :class:`Decoded`).
    defer_writes: bool = False
    #: Run the analyzers one after another even where idle cores would let several run at once
    #: (set on a retry after a worker died while several ran, so that the next death names one).
    solo: bool = False


#: Key of a unit's results under which a worker returns its :class:`Decoded` track (``hand_on``).
HANDOFF = "_decoded"


@dataclass(frozen=True)
class Decoded:
    """A track decoded by one stage and handed to the next, so it is never decoded twice: the mix
    (or the reason it could not be decoded), its decode warnings, and stems held in memory
    (``{stem: (path, audio)}``, exactly as written to ``path``)."""

    audio: Audio | None
    error: DecodeError | None = None
    warnings: tuple[str, ...] = ()
    stems: dict[str, tuple[Path, Audio]] = field(default_factory=dict)
    #: Files an analyzer of the earlier stage left to write (``{analyzer: writer}``, e.g.
    #: :class:`~mirflow.core.stems_io.StemsToWrite`): written by the next stage's worker first.
    writes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, ctx: TrackContext) -> "Decoded | None":
        """What ``ctx`` holds decoded; ``None`` when it was never decoded."""
        if ctx._audio is None and ctx._decode_error is None:
            return None
        return cls(ctx._audio, ctx._decode_error, tuple(ctx.warnings), ctx.kept_stems(),
                   dict(ctx.files_to_write))

    def context(self, path: Path) -> TrackContext:
        """A fresh context of the track at ``path`` around the decoded signal and stems."""
        ctx = TrackContext(path)
        ctx._audio, ctx._decode_error = self.audio, self.error
        ctx.warnings.extend(self.warnings)
        for name, (stem_path, audio) in self.stems.items():
            ctx.keep_stem(name, stem_path, audio.samples, audio.sr)
        return ctx


class HandedTrack(ABC):
    """A :class:`Decoded` track on its way from one process to another, its arrays elsewhere than
    in the message (shared memory, Ray's object store). The receiving :class:`Worker` opens it;
    when it is lost, the track is decoded again from its files, unless the earlier stage left files
    to write (``writes``: the keys of ``Decoded.writes``), which are then lost with it."""

    writes: tuple[str, ...] = ()

    @abstractmethod
    def open(self) -> Decoded:
        """The track; :class:`~mirflow.core.errors.HandOffLost` when it is gone."""


@dataclass(frozen=True)
class ShippedTrack(HandedTrack):
    """A track whose arrays wait in shared memory (:func:`mirflow.core.shared.ship`): what the pipes
    carry from the GPU lane through the coordinator to a CPU worker."""

    shipped: Shipped
    writes: tuple[str, ...] = ()

    @classmethod
    def of(cls, decoded: Decoded) -> "ShippedTrack":
        return cls(ship(decoded), tuple(decoded.writes))

    def open(self) -> Decoded:
        """The track again (:meth:`mirflow.core.shared.Shipped.open`)."""
        return self.shipped.open()

    def release(self) -> None:
        """Free its shared memory (the coordinator, once the receiving task is over)."""
        self.shipped.release()


def describe(exc: BaseException) -> str:
    """``"DecodeError: reason"`` style text for a record."""
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"


class ComputeTimer:
    """Times an analyzer's calls: compute seconds are wall seconds, or with ``cpu`` the larger of
    wall and process CPU seconds: for an ``elastic`` analyzer running alone in a CPU worker, which
    spreads its work over the threads it is lent, so its rate stays one thread's work per second of
    audio whatever it was lent (a separation running 2 passes at once takes half its work in wall
    time, and estimates, which divide elastic work by the threads a track gets, would count the
    speed-up twice). On an accelerator the wall time is the work."""

    def __init__(self, *, cpu: bool) -> None:
        self.cpu = cpu
        self._wall = self._cpu = 0.0

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time() if self.cpu else 0.0

    def elapsed(self) -> float:
        wall = time.perf_counter() - self._wall
        return max(wall, time.process_time() - self._cpu) if self.cpu else wall


class Worker:
    """Analyzer state for one worker; see the module docstring."""

    def __init__(self, specs: list[AnalyzerSpec], *, device: str = "auto", threads: int = 0,
                 on_phase: Callable[[str, str], None] | None = None) -> None:
        self.specs = {s.name: s for s in specs}
        #: Told ``(step, analyzer)`` before each decode/setup/analyze step, so a supervisor that
        #: sees this process die knows what it was doing.
        self.on_phase = on_phase or (lambda step, name: None)
        self.order = list(self.specs)
        self.device = device
        #: Whether this worker's analyzers compute on the CPU (not a GPU lane or actor).
        self.on_cpu = devices.parse(device)[0] == "cpu"
        self.threads = threads  # CPU threads per analyzer thread pool (0: library default)
        self._analyzers: dict[str, Analyzer] = {}
        self._setup_errors: dict[str, BaseException] = {}
        self.setup_count: dict[str, int] = {}
        self._pool: ThreadPoolExecutor | None = None  # for analyzers running side by side
        #: The most analyzers that ran at once on a chunk so far (tests, benchmarks).
        self.most_at_once = 0

    def analyzer(self, name: str) -> Analyzer:
        """The worker's instance of ``name``, set up on first use (a setup failure is remembered)."""
        if name in self._setup_errors:
            raise self._setup_errors[name]
        if name not in self._analyzers:
            self.on_phase("setup", name)
            inst = self.specs[name].build()
            inst.threads = self.threads
            try:
                inst.setup(self.device)
            except Exception as exc:
                self._setup_errors[name] = exc
                raise
            self.setup_count[name] = self.setup_count.get(name, 0) + 1
            self._analyzers[name] = inst
        return self._analyzers[name]

    def analyzer_or_none(self, name: str) -> Analyzer | None:
        """Like :meth:`analyzer`, ``None`` when its setup failed (the failure is remembered)."""
        try:
            return self.analyzer(name)
        except Exception:  # noqa: BLE001 - reported per track by _run_one_analyzer
            return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for inst in self._analyzers.values():
            try:
                inst.teardown()
            except Exception:  # noqa: BLE001 - teardown problems must not hide results
                log.exception("teardown of %s failed", inst.name)
        self._analyzers.clear()

    def process(self, units: list[WorkUnit], contexts: list[TrackContext] | None = None
                ) -> list[dict[str, AnalyzerResult]]:
        """Run every due analyzer on every unit; one ``{analyzer: result}`` dict per unit.

        ``contexts`` (one per unit) are used instead of decoding ``unit.track.mix``: e.g. a signal
        already in memory (:func:`mirflow.analyze`); they keep what the analyzers computed.
        """
        self.on_phase("decode", "")
        units, lost = self._open_handed(units)
        if lost:  # the earlier stage's work on these tracks is gone: they fail, the others go on
            kept = [i for i in range(len(units)) if i not in lost]
            done = self.process([units[i] for i in kept],
                                [contexts[i] for i in kept] if contexts is not None else None)
            merged: list[dict[str, AnalyzerResult]] = [
                {n: self._result(n, "error", error=lost[i]) for n in units[i].due} for i in range(len(units))]
            for i, res in zip(kept, done):
                merged[i] = res
            return merged
        ctxs = contexts if contexts is not None else [
            u.decoded.context(u.track.mix) if u.decoded is not None else TrackContext(u.track.mix)
            for u in units]
        results: list[dict[str, AnalyzerResult]] = [{} for _ in units]
        for unit, ctx, res in zip(units, ctxs, results):
            ctx.defer_writes = unit.defer_writes
            # stems stay in memory for analyzers that follow their producer (per-stem features)
            # or for a later stage; otherwise they are freed once written
            ctx.keep_stems = unit.hand_on or any(registry.get(n).after for n in unit.due)
            if unit.decoded is not None:
                self._write_handed(unit, ctx, res)
        self._run_analyzers(units, ctxs, results)
        for ctx, res in zip(ctxs, results):
            if ctx.warnings:
                for r in res.values():
                    r.warnings = list(ctx.warnings)
        for unit, ctx, res in zip(units, ctxs, results):
            if unit.hand_on:
                decoded = Decoded.of(ctx)
                if decoded is not None:
                    res[HANDOFF] = decoded  # type: ignore[assignment] - taken out by the executor
        return results

    # -- scheduling ------------------------------------------------------------------------------
    @staticmethod
    def _todo(name: str, units: list[WorkUnit]) -> list[int]:
        """The units ``name`` is due on (an analyzer whose outputs an earlier stage left to write is
        done here by the write)."""
        return [i for i, u in enumerate(units)
                if name in u.due and not (u.decoded is not None and name in u.decoded.writes)]

    def _runnable(self, name: str, units: list[WorkUnit], results: list[dict[str, AnalyzerResult]]
                  ) -> list[int]:
        """The units ``name`` can run on now; the others get a ``blocked`` result (a requirement
        that did not succeed or has no result)."""
        runnable = []
        for i in self._todo(name, units):
            missing = self._missing_requirement(name, units[i], results[i])
            if missing:
                results[i][name] = self._result(name, "blocked", note=missing)
            else:
                runnable.append(i)
        return runnable

    @staticmethod
    def _ready(name: str, unfinished: set[str]) -> bool:
        """Whether everything ``name`` runs after (requirements, ``after``) has finished."""
        cls = registry.get(name)
        return not (set(cls.requires) | set(cls.after)) & unfinished

    def _run_analyzers(self, units: list[WorkUnit], ctxs: list[TrackContext],
                       results: list[dict[str, AnalyzerResult]]) -> None:
        """Run the due analyzers in dependency order; several at once, in threads, while the thread
        allowance is above one and they are ``concurrent`` (see the module docstring)."""
        waiting = [n for n in self.order if self._todo(n, units)]
        solo = any(u.solo for u in units)
        running: dict[Future, str] = {}
        try:
            while waiting or running:
                while waiting:
                    unfinished = set(waiting) | set(running.values())
                    ready = [n for n in waiting if self._ready(n, unfinished - {n})]
                    if not ready:
                        break
                    name = ready[0]
                    width = 1 if solo else (allowance() or 1)
                    side_by_side = width > 1 and all(
                        registry.get(n).concurrent for n in (name, *running.values()))
                    # set-ups run alone: a crash there is the set-up's fault, named as such
                    set_up = name in self._analyzers or name in self._setup_errors
                    if running and (not side_by_side or len(running) >= width or not set_up):
                        break
                    waiting.remove(name)
                    runnable = self._runnable(name, units, results)
                    if not runnable:
                        continue
                    company = running or any(registry.get(n).concurrent for n in ready[1:])
                    if side_by_side and company and not running:  # set up those about to join
                        for n in (n for n in ready[1:] if registry.get(n).concurrent):
                            self.analyzer_or_none(n)
                    self.analyzer_or_none(name)
                    args = (name, [units[i] for i in runnable], [ctxs[i] for i in runnable],
                            [results[i] for i in runnable])
                    if side_by_side and company:
                        running[self._threads().submit(self._run_in_thread, *args)] = name
                        self.most_at_once = max(self.most_at_once, len(running))
                        self.on_phase("analyze", "+".join(sorted(running.values())))
                    else:
                        apply_thread_allowance()  # the cores idle workers lend this one (local executor)
                        self.on_phase("analyze", name)
                        self._run_one_analyzer(*args)
                if running:
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in done:
                        running.pop(fut)
                        fut.result()  # results are in the sinks; this raises only on a bug
                    if running:
                        self.on_phase("analyze", "+".join(sorted(running.values())))
        finally:
            if running:  # an error above: let the threads finish before the contexts go
                wait(list(running))

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max(2, ceiling()), thread_name_prefix="mirflow-analyzer")
        return self._pool

    def _run_in_thread(self, name: str, units: list[WorkUnit], ctxs: list[TrackContext],
                       sinks: list[dict[str, AnalyzerResult]]) -> None:
        """One analyzer beside others: one torch thread each (the BLAS pools stay as the main thread
        set them, see :func:`~mirflow.core.threads.apply_thread_allowance`)."""
        set_torch_threads(1)
        self._run_one_analyzer(name, units, ctxs, sinks, this_thread=True)

    @staticmethod
    def _open_handed(units: list[WorkUnit]) -> tuple[list[WorkUnit], dict[int, str]]:
        """``units`` with each handed track opened (a :class:`Decoded` again, or ``None`` to decode
        it from its files when it was lost), and ``{index: reason}`` for those lost with files still
        to write (see :class:`HandedTrack`)."""
        opened, lost = list(units), {}
        for i, unit in enumerate(units):
            handed = unit.decoded
            if isinstance(handed, HandedTrack):
                try:
                    opened[i] = replace(unit, decoded=handed.open())
                except HandOffLost as exc:
                    if handed.writes:
                        lost[i] = describe(exc)
                    else:
                        log.warning("%s: %s; decoding it again", unit.track.dir, exc)
                        opened[i] = replace(unit, decoded=None)
        return opened, lost

    def _write_handed(self, unit: WorkUnit, ctx: TrackContext, sink: dict[str, AnalyzerResult]) -> None:
        """Write the files an earlier stage's analyzer left (stems), before this stage's analyzers
        read them (see :meth:`write_files`)."""
        assert unit.decoded is not None
        self.write_files(unit.decoded.writes, ctx, unit.track.dir, sink, self.on_phase)

    def write_files(self, writes: dict[str, Any], ctx: TrackContext, where: Path,
                    sink: dict[str, AnalyzerResult], phase: Callable[[str, str], None]) -> None:
        """Write the files analyzers left to write (``{analyzer: writer}``, e.g. stems) and keep
        what was written in ``ctx`` for the analyzers that read it. A failed write fails that
        analyzer on this track (its result in ``sink`` replaces an earlier one). The analyzer is
        named in the phase, so a worker killed here blames it."""
        for name, writer in writes.items():
            phase("analyze", name)
            start = time.perf_counter()
            try:
                writer.keep_in(ctx, writer.write())
            except Exception as exc:  # noqa: BLE001 - this track's outputs fail, the run goes on
                log.warning("%s: writing outputs of %s failed: %s", name, where, describe(exc))
                sink[name] = self._result(name, "error", error=f"writing outputs failed: {describe(exc)}",
                                          seconds=time.perf_counter() - start)

    def _missing_requirement(self, name: str, unit: WorkUnit, done: dict[str, AnalyzerResult]) -> str | None:
        for dep in registry.get(name).requires:
            if dep in done:
                if done[dep].status != "ok":
                    return f"requires {dep}, which did not succeed on this track"
            elif dep not in unit.ready:
                return f"requires {dep}, which has no result for this track"
        return None

    def _result(self, name: str, status: str, **kw: Any) -> AnalyzerResult:
        cls = registry.get(name)
        inst = self._analyzers.get(name)
        inst = inst or self.specs[name].build()
        return AnalyzerResult(status=status, version=cls.version, params=inst.params_hash(),
                              parameters=inst.hashed_params(), **kw)

    def _run_one_analyzer(self, name: str, units: list[WorkUnit], ctxs: list[TrackContext],
                          sinks: list[dict[str, AnalyzerResult]], *, this_thread: bool = False) -> None:
        try:
            analyzer = self.analyzer(name)
        except Exception as exc:  # noqa: BLE001 - reported per track, the run goes on
            log.debug("setup of %s failed", name, exc_info=True)
            for sink in sinks:
                sink[name] = self._result(name, "error", error=f"setup failed: {describe(exc)}")
            return
        # the mix is decoded, and the shared steps computed, by the first analyzer that reads
        # them: that time is reported apart (``Apart``), so rates do not depend on the order
        befores = [ctx.apart(this_thread=this_thread) for ctx in ctxs]
        for ctx in ctxs:
            ctx.reader = name
        timer = ComputeTimer(cpu=type(analyzer).elastic and self.on_cpu and not this_thread)
        try:
            if analyzer.batchable and len(ctxs) > 1:
                timer.start()
                outs = analyzer.analyze_batch(ctxs)
                elapsed = timer.elapsed()
                aparts = [ctx.apart(this_thread=this_thread) - b for ctx, b in zip(ctxs, befores)]
                each = max(0.0, elapsed - sum(a.total for a in aparts)) / len(ctxs)
                timed = [(o, each, a) for o, a in zip(outs, aparts)]
            else:
                timed = []
                for ctx, before in zip(ctxs, befores):
                    timer.start()
                    try:
                        out: dict[str, Any] | BaseException = analyzer.analyze(ctx)
                    except Exception as exc:  # noqa: BLE001 - one bad track never stops the run
                        out = exc
                    elapsed = timer.elapsed()
                    apart = ctx.apart(this_thread=this_thread) - before
                    timed.append((out, max(0.0, elapsed - apart.total), apart))
        finally:
            for ctx in ctxs:
                ctx.reader = ""
        for unit, ctx, sink, (out, seconds, apart) in zip(units, ctxs, sinks, timed):
            sink[name] = self._to_result(analyzer, unit, ctx, out, seconds, apart,
                                         tuple(sorted(ctx.shared_uses.get(name, ()))))

    def _to_result(self, analyzer: Analyzer, unit: WorkUnit, ctx: TrackContext,
                   out: dict[str, Any] | BaseException, seconds: float,
                   apart: "Apart | None" = None, uses: tuple[str, ...] = ()) -> AnalyzerResult:
        apart = apart or Apart()
        base = dict(version=analyzer.version, params=analyzer.params_hash(),
                    parameters=analyzer.hashed_params(), seconds=seconds,
                    decode_seconds=apart.decode, shared_seconds=apart.shared, uses=uses)
        if isinstance(out, Blocked):
            return AnalyzerResult(status="blocked", note=str(out),
                                  fingerprint=self._fingerprint(analyzer, unit), **base)
        if isinstance(out, BaseException):
            if not isinstance(out, (DecodeError, MirflowError)):
                log.warning("%s failed on %s: %s", analyzer.name, unit.track.dir, describe(out),
                            exc_info=out)
            return AnalyzerResult(status="error", error=describe(out), **base)
        features = dict(out)
        note = features.pop("_note", None)
        extra = features.pop("_record", None) or {}
        ctx.results[analyzer.name] = features
        return AnalyzerResult(status="ok", features=features, note=note, extra=extra,
                              fingerprint=self._fingerprint(analyzer, unit), **base)

    @staticmethod
    def _fingerprint(analyzer: Analyzer, unit: WorkUnit) -> str | None:
        try:
            return analyzer.input_fingerprint(unit.track.dir)
        except OSError:
            return None
