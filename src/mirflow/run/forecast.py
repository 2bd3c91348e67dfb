"""``mirflow plan``: what a run would do, why, and how long it should take on this machine.

Read-only like ``status``: sidecars, file headers (durations, via ``soundfile.info`` or PyAV) and
the machine's rates file (:mod:`mirflow.run.rates`); nothing is decoded and no lease is taken.

The estimate: for each due (track, analyzer) pair, the analyzer's rate (compute seconds per audio
second, measured by earlier runs on this machine with the same parameters and device) times the
track's duration, or, once earlier runs rated tracks of different enough durations, a part per track
plus a part per second (:meth:`~mirflow.run.rates.Rate.seconds`), plus decoding the track's mix and the shared steps (the resampled mono view,
its STFT) that its due analyzers read, each once (rates of their own, see
:mod:`mirflow.run.timing`). CPU analyzers share the worker processes (their sum is divided by the
workers' cores; with fewer tracks than cores, a track's worker is lent idle cores, and the longest
track, with its analyzers side by side and separation's passes spread, bounds the run); GPU analyzers
on an accelerator run in their own lane at the same time; the coordinator's own work per track
(leases, sidecar reads and durable writes: a few milliseconds, which bound a run of many short
tracks) goes on beside both. The ETA is the longest of these (:mod:`mirflow.run.estimate`), plus
the start-up (workers starting, models loading: from the run's start to its
first result, less that track's compute) that the last runs with the same executor and set of due
analyzers measured, or else the closest measured set's (:meth:`RateBook.startup_estimate`); with
none measured, start-up is left out and the plan says so. Without a rate for some
due analyzer the ETA is unknown (``None``) and the plan says which rates are missing.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import RunOptions
from ..core.dataset import discover
from . import limits
from .coordinator import build_analyzers
from .plan import BLOCKED, DUE, decide, read_for_plan
from .estimate import RunCost, lent_threads, lone_track_threads
from .rates import DECODE, RateBook
from .timing import Durations, device_labels


@dataclass
class AnalyzerPlan:
    """One analyzer's part of the plan."""

    name: str
    device: str
    due: int = 0
    reasons: Counter = field(default_factory=Counter)
    states: Counter = field(default_factory=Counter)
    blocked: Counter = field(default_factory=Counter)  # why, for the tracks it is blocked on
    audio_s: float = 0.0
    rate: float | None = None  # compute seconds per audio second, None = no rate measured yet
    compute_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "due": self.due, "reasons": dict(self.reasons.most_common()),
                "states": dict(self.states), "blocked_reasons": dict(self.blocked.most_common()),
                "audio_s": round(self.audio_s, 3),
                "rate_s_per_audio_s": None if self.rate is None else round(self.rate, 6),
                "compute_s": None if self.compute_s is None else round(self.compute_s, 3)}


@dataclass
class PlanReport:
    """What a run with the same options would do (see the module docstring)."""

    dataset: str
    tracks: int
    due_tracks: int
    audio_s: float
    workers: int
    analyzers: dict[str, AnalyzerPlan]
    unavailable: dict[str, str]
    eta_s: float | None
    missing_rates: list[str]
    unknown_durations: int = 0
    pairs: list[dict[str, str]] = field(default_factory=list)
    #: Expected seconds decoding the due tracks (``None`` until a run measured decoding here).
    decode_s: float | None = None
    #: Expected seconds of the shared steps the due analyzers read (``None``: not measured yet).
    shared_s: float | None = None
    #: Expected start-up, included in ``eta_s`` (``None``: no run with this set of analyzers yet).
    startup_s: float | None = None
    #: The other set of analyzers (:func:`~mirflow.run.rates.startup_key`) whose measured start-up
    #: ``startup_s`` is (:meth:`RateBook.startup_estimate`); ``None`` when measured for this set.
    startup_from: str | None = None
    #: Expected seconds of the coordinator's own work (leases, sidecars) for the due tracks, from
    #: its per-track rate (``None``: not measured yet with this executor; then left out).
    coordinator_s: float | None = None
    #: Threads each due track's worker may use (above 1: the local executor lends the cores of
    #: workers it does not need, with fewer tracks than cores).
    threads_per_track: int = 1
    #: The workers the run would have started had their model copies fit in the memory budget
    #: (:func:`~mirflow.run.limits.workers_for_memory`); ``None`` when they fit.
    workers_before_memory: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "tracks": self.tracks, "due_tracks": self.due_tracks,
                "audio_s": round(self.audio_s, 3), "workers": self.workers,
                "workers_before_memory": self.workers_before_memory,
                "threads_per_track": self.threads_per_track,
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
                "decode_s": None if self.decode_s is None else round(self.decode_s, 3),
                "shared_s": None if self.shared_s is None else round(self.shared_s, 3),
                "startup_s": None if self.startup_s is None else round(self.startup_s, 1),
                "startup_from": self.startup_from,
                "coordinator_s": None if self.coordinator_s is None else round(self.coordinator_s, 3),
                "missing_rates": self.missing_rates, "unknown_durations": self.unknown_durations,
                "analyzers": {n: a.as_dict() for n, a in self.analyzers.items()},
                "unavailable": self.unavailable, "due": self.pairs}


def plan(dataset: str | os.PathLike[str], options: RunOptions, *,
         rates: RateBook | None = None) -> PlanReport:
    """The plan of ``dataset`` for ``options``; see the module docstring."""
    root = Path(dataset)
    analyzers, unavailable = build_analyzers(options)
    labels = device_labels({n: a for n, a in analyzers.items() if n not in unavailable},
                           options.device)
    rates = rates if rates is not None else RateBook()
    durations = Durations()
    plans = {n: AnalyzerPlan(n, labels.get(n, "cpu")) for n in analyzers}
    tracks = discover(root)
    decided = []
    for track in tracks:
        decisions = decide(track, read_for_plan(track), analyzers, unavailable=unavailable,
                           force=options.force, retry_failed=options.retry_failed)
        for name, d in decisions.items():
            plans[name].states[d.state] += 1
            if d.state == BLOCKED:
                plans[name].blocked[d.reason] += 1
        due = [n for n, d in decisions.items() if d.state == DUE]
        if due:
            decided.append((track, due, decisions))
    due_tracks = len(decided)
    started = 1 if options.executor == "serial" else max(
        1, options.workers or options.cores or os.cpu_count() or 1)
    cores = max(started, options.cores)  # the local workers' core budget (--cores, else one each)
    workers = wanted = max(1, min(started, max(due_tracks, 1)))
    if options.executor == "local" and not options.workers:  # as the run fits its workers to memory
        on_cpu = {n for _, due, _ in decided for n in due if labels.get(n, "cpu") == "cpu"}
        workers = limits.workers_for_memory(workers, limits.models_memory(on_cpu),
                                            options.max_memory or limits.default_memory_budget())
    threads = lent_threads(options.executor, cores, workers)
    cost = RunCost(rates, {n: a for n, a in analyzers.items() if n in labels}, labels,
                   threads=lone_track_threads(options.executor, cores))
    audio, unknown = 0.0, 0
    pairs: list[dict[str, str]] = []
    for track, due, decisions in decided:
        dur = durations.get(track)
        if dur is None:
            unknown += 1
        audio += dur or 0.0
        cost.add(dur or 0.0, due)
        rel = track.relpath(root)
        for name in due:
            p = plans[name]
            p.due += 1
            p.reasons[decisions[name].reason] += 1
            p.audio_s += dur or 0.0
            pairs.append({"track": rel, "analyzer": name, "reason": decisions[name].reason})
    for name, p in plans.items():
        p.rate = cost.rate(name) if name in labels else None
        if p.due and p.rate is not None:
            p.compute_s = cost.compute.get(name, 0.0)
            if p.audio_s > 0:  # what the rate comes to on these tracks (a part per track included)
                p.rate = p.compute_s / p.audio_s
    missing = [n for n, p in plans.items() if p.due and p.rate is None]
    if "shared steps" in cost.missing:
        missing.append("shared steps")
    decode_s = cost.decode_s if rates.get(DECODE, "cpu", "") else None
    shared_s = None if "shared steps" in cost.missing else cost.shared_s
    due_names = {n: p.device for n, p in plans.items() if p.due}
    startup, startup_from = rates.startup_estimate(due_names, options.executor)
    per_track = rates.coordinator_per_track(options.executor)
    coordinator_s = None if per_track is None else per_track * due_tracks
    eta = None if missing else cost.seconds(
        coordinator_s or 0.0, workers=cores if options.executor == "local" else workers,
        executor=options.executor) + (startup or 0.0)
    return PlanReport(str(root), len(tracks), due_tracks, audio, workers, plans, unavailable, eta,
                      missing, unknown, pairs, decode_s, shared_s, startup, startup_from,
                      coordinator_s, threads, wanted if workers < wanted else None)
