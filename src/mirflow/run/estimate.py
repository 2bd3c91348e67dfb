"""How long a run should take, from the rates earlier runs measured on this machine.

Shared by ``mirflow plan`` (:mod:`mirflow.run.forecast`) and the progress bar's first estimate
(:mod:`mirflow.run.timing`). :class:`RunCost` adds up a run's expected compute track by track:

* per track, one thread after another: decoding the mix, the shared steps its due analyzers read
  (each once), and each due analyzer's rate times the track's duration (CPU analyzers; GPU
  analyzers on an accelerator add to the GPU lane's total instead);
* per track, with the threads a worker may use for it (the local executor lends the cores of idle
  workers when fewer tracks than cores are in flight, so the longest track ends up with all of
  them once the others are done: :func:`lone_track_threads`): decoding, then ``elastic`` analyzers
  spread over the threads (separation's passes, at most its ``max_cpu_lanes``), ``concurrent``
  ones side by side (the longest of them, with the shared steps it reads, or their sum over the
  threads, whichever is longer), the others one after another (:func:`track_seconds`).

:func:`run_seconds` turns the totals into the run's seconds after its start-up: the slowest of the CPU
work spread over the workers' cores, the longest track, the GPU lane and the coordinator.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..analyzers.base import Analyzer
from .rates import DECODE, Rate, RateBook


def run_seconds(cpu_s: float, gpu_s: float, coordinator_s: float, *, workers: int, cores: int,
                executor: str = "local", longest_s: float = 0.0) -> float:
    """Expected seconds of a run after its start-up, from its parts: ``cpu_s`` of compute in the
    CPU workers, one thread after another (decoding and shared steps included), ``gpu_s`` in an
    accelerator's lane, ``coordinator_s`` of the coordinator's own work (leases, sidecars), and
    ``longest_s``, the CPU work of the longest track with the threads it may use.

    ``serial`` does everything in one thread, one after the other. Otherwise the stages run at the
    same time and the slowest bounds the run: the CPU work spread over ``workers`` (for the local
    executor, its core budget: workers with idle neighbours use their cores), the longest track,
    the GPU lane, the coordinator (one thread); with ``local`` workers, which share this machine's
    ``cores`` with the coordinator, also the CPU work and the coordinator's together over ``cores``."""
    if executor == "serial":
        return cpu_s + gpu_s + coordinator_s
    bound = max(cpu_s / max(1, workers), longest_s, gpu_s, coordinator_s)
    if executor == "local":
        bound = max(bound, (cpu_s + coordinator_s) / max(1, cores))
    return bound


def lone_track_threads(executor: str, cores: int) -> int:
    """Threads the longest track may end up with: with the local executor, once the other tracks
    are done, every core of the workers' budget (elastic threads); else one. A run's duration is at
    least this track's time with them (:func:`run_seconds`' ``longest_s``)."""
    return lent_threads(executor, cores, 1)


def lent_threads(executor: str, cores: int, workers: int) -> int:
    """Threads each track's worker may use: the local executor's workers share a core budget of
    ``cores``, so with fewer tracks (``workers``) than cores each is lent the idle cores' threads;
    the other executors lend none."""
    return max(1, cores // max(1, workers)) if executor == "local" else 1


@dataclass(frozen=True)
class AnalyzerCost:
    """One due analyzer's expected compute on one track (seconds) and how it may run."""

    seconds: float
    uses: frozenset[str] = frozenset()  # the shared steps it reads
    concurrent: bool = False  # may run beside other concurrent analyzers, in a thread of its own
    elastic: bool = False  # spreads its own work over the threads it is lent
    max_threads: int = 0  # the most threads an elastic analyzer uses (0: as many as it is lent)


def track_seconds(decode_s: float, shared: dict[str, float], costs: Iterable[AnalyzerCost],
                  threads: int = 1) -> float:
    """Seconds one track's CPU work takes with ``threads`` threads (see the module docstring):
    ``decode_s``, the shared steps (``{step: seconds}``, each computed once) and the analyzers."""
    costs = list(costs)
    serial = decode_s + sum(shared.values()) + sum(c.seconds for c in costs)
    if threads <= 1:
        return serial
    side = [c for c in costs if c.concurrent and not c.elastic]
    steps = frozenset().union(*(c.uses for c in side)) & shared.keys()
    side_shared = sum(shared[s] for s in steps)
    paths = [c.seconds + sum(shared.get(s, 0.0) for s in c.uses) for c in side]
    parallel = (decode_s + sum(shared.values()) - side_shared
                + sum(c.seconds / min(threads, c.max_threads or threads) for c in costs if c.elastic)
                + max(max(paths, default=0.0), (sum(c.seconds for c in side) + side_shared) / threads)
                + sum(c.seconds for c in costs if not c.concurrent and not c.elastic))
    return min(serial, parallel)


@dataclass
class RunCost:
    """A run's expected compute, added up track by track (:meth:`add`) from ``rates``.

    ``analyzers`` are the run's (available) analyzers, ``labels`` their devices (``cpu`` or an
    accelerator's label, :func:`mirflow.run.timing.device_labels`), ``threads`` the threads each
    track may use (more than one only with cores lent by idle workers)."""

    rates: RateBook
    analyzers: dict[str, Analyzer]
    labels: dict[str, str]
    threads: int = 1
    cpu_s: float = 0.0  # CPU work, one thread after another (decoding and shared steps included)
    gpu_s: float = 0.0  # the GPU lane's work
    decode_s: float = 0.0
    shared_s: float = 0.0
    longest_s: float = 0.0  # the longest track's CPU work with ``threads`` threads
    #: Due analyzers without a rate on this machine ("shared steps" when a step has none).
    missing: set[str] = field(default_factory=set)

    #: Expected compute seconds of each due analyzer over the tracks added so far.
    compute: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rates: dict[str, Rate | None] = {}
        self._uses: dict[str, frozenset[str]] = {}
        for name, a in self.analyzers.items():
            rate = self.rates.get(name, self.labels.get(name, "cpu"), a.params_hash())
            self._rates[name] = rate
            self._uses[name] = frozenset(rate.uses) if rate else frozenset()
        self._decode = self.rates.get(DECODE, "cpu", "")

    def rate(self, name: str) -> float | None:
        """``name``'s stored compute seconds per audio second here (``None``: not measured yet)."""
        rate = self._rates.get(name)
        return None if rate is None else rate.per_audio_second

    def add(self, duration: float, names: Iterable[str]) -> float:
        """Account one track of ``duration`` seconds with ``names`` due; returns its expected
        compute, one thread after another (CPU and GPU work: a weight for the progress bar).
        Each part is its rate's :meth:`~mirflow.run.rates.Rate.seconds` for the duration.
        Decoding without a rate counts as nothing (a small part); a missing analyzer or step
        rate is noted in :attr:`missing` and counts as nothing."""
        names = [n for n in names if n in self.analyzers]
        decode = self._decode.seconds(duration) if self._decode else 0.0
        shared: dict[str, float] = {}
        for step in frozenset().union(*(self._uses[n] for n in names)):
            rate = self.rates.shared_rate(step)
            if rate is None:
                self.missing.add("shared steps")
            shared[step] = rate.seconds(duration) if rate else 0.0
        cpu, gpu = [], 0.0
        for name in names:
            rate = self._rates[name]
            if rate is None:
                self.missing.add(name)
            seconds = rate.seconds(duration) if rate else 0.0
            self.compute[name] = self.compute.get(name, 0.0) + seconds
            if self.labels.get(name, "cpu") == "cpu":
                cls = type(self.analyzers[name])
                cpu.append(AnalyzerCost(seconds, self._uses[name], cls.concurrent, cls.elastic,
                                        int(getattr(cls, "max_cpu_lanes", 0))))
            else:
                gpu += seconds
        serial = decode + sum(shared.values()) + sum(c.seconds for c in cpu)
        self.cpu_s += serial
        self.gpu_s += gpu
        self.decode_s += decode
        self.shared_s += sum(shared.values())
        self.longest_s = max(self.longest_s, track_seconds(decode, shared, cpu, self.threads))
        return serial + gpu

    def seconds(self, coordinator_s: float, *, workers: int, executor: str = "local",
                cores: int | None = None) -> float:
        """The run's expected seconds after its start-up (:func:`run_seconds`)."""
        return run_seconds(self.cpu_s, self.gpu_s, coordinator_s, workers=workers,
                           cores=cores or os.cpu_count() or 1, executor=executor,
                           longest_s=self.longest_s)
