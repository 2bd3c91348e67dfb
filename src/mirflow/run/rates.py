"""Per-analyzer compute rates measured by earlier runs on this machine, for estimates.

A *rate* is seconds of compute per second of audio (``0.02`` = the analyzer takes 0.02 s of one
worker's time per second of audio, i.e. 50x realtime on one worker). Rates are kept per machine,
analyzer, device and parameter hash in ``$XDG_CACHE_HOME/mirflow/rates.json`` (by default
``~/.cache/mirflow/rates.json``), so a ``mirflow plan`` or a progress bar can turn the audio still to
analyse into an expected time. There is no rate (and estimates say "unknown") until a run on this
machine has done that analyzer with those parameters on that device. Start-ups (run start to first
result, less that track's compute) are kept too, per set of analyzers and devices: the last
:data:`STARTUP_KEEP` runs' values, whose median is the estimate.

Updating blends a run's measurement with the stored one: the stored compute and audio seconds are
halved and the run's added, so recent runs dominate while one noisy run does not erase the history.
The file is rewritten atomically under a file lock, merged with what other runs wrote meanwhile.

Beside the ratio, each rate keeps the (equally blended) sums a straight line needs, ``compute =
per_track + per_second x duration`` (:class:`Fit`), from each track's duration and compute. Many
analyzers have a part per track that does not grow with the audio (Demucs pads a short track to
whole segments, a beat tracker and a classifier have set-up work per call), so a ratio measured on
30 s clips overestimates full-length tracks, and one measured on full-length tracks underestimates
clips. Once the rated tracks' durations are spread enough to tell the two parts apart, estimates
(:meth:`Rate.seconds`) use the line; until then, the ratio.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "rates.json"
#: 3: analyzers' rates exclude decoding the mix (rated as :data:`DECODE`) and the shared steps
#: (the resampled mono view and its STFT, rated as :func:`shared_name`), and say which shared steps
#: they read (``uses``). Rates of formats 1 and 2, which counted these in whichever analyzer came
#: first, are not read.
FORMAT = 3
#: The name decoding the mix is rated under (device ``cpu``, no parameters).
DECODE = "decode"
#: The name the coordinator's own work per track (leasing, planning, merging and durably writing the
#: sidecar) is rated under, with the executor as its device. Its rate is per *track*, not per second of
#: audio (:meth:`RateBook.coordinator_per_track`): with short tracks and light analyzers it, not the
#: workers, bounds a run.
COORDINATOR = "coordinator"
#: Weight of the stored history when a new run's measurement is added.
DECAY = 0.5
#: Start-ups kept per set of analyzers; their median is the estimate, so one cold run (numba
#: compiling on a new installation, a model read from a cold disk) does not skew it.
STARTUP_KEEP = 5


def shared_name(step: str) -> str:
    """The name a shared step (``"stft@22050/2048/512"``) is rated under (device ``cpu``, no
    parameters): ``"shared:" + step``."""
    return f"shared:{step}"


def startup_key(labels: dict[str, str], executor: str = "local") -> str:
    """The key of a run's start-up: its executor, then its due analyzers with their devices
    (``{name: device}``): ``"local:loudness@cpu,tonal@cpu"``. The executor is part of it since a
    run in this process (``serial``: analyzers already imported and set up by an earlier run of a
    notebook or script) starts in a fraction of the time that new worker processes need."""
    return f"{executor}:" + ",".join(f"{name}@{device}" for name, device in sorted(labels.items()))


def _startup_parts(key: str) -> tuple[str, list[str]]:
    """A :func:`startup_key` split: ``(executor, ["name@device", ...])``."""
    executor, _, items = key.partition(":")
    return executor, items.split(",") if items else []


def startup_analyzers(key: str) -> list[str]:
    """The analyzer names of a :func:`startup_key`, in its order."""
    return [item.partition("@")[0] for item in _startup_parts(key)[1]]


def cache_dir() -> Path:
    """mirflow's cache folder: ``$XDG_CACHE_HOME/mirflow``, else ``~/.cache/mirflow``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mirflow"


def default_path() -> Path:
    return cache_dir() / FILE_NAME


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What identifies this machine for rates: host name, CPU model and core count."""
    return {"host": platform.node(), "cpu": _cpu_model(), "cores": os.cpu_count() or 1}


def machine_key() -> str:
    """A short stable id of :func:`machine` (12 hex digits)."""
    blob = json.dumps(machine(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


#: Below this spread of the rated tracks' inverse durations (standard deviation over mean), a part
#: per track cannot be told from the part per second of audio: :meth:`Fit.line` gives none.
MIN_SPREAD = 0.25


@dataclass(frozen=True)
class Fit:
    """Sums over the tracks behind a rate, blended like the rate, for a line ``compute = per_track +
    per_second x duration`` fitted to each track's cost per audio second against the inverse of its
    duration (``compute / duration = per_second + per_track / duration``): relative errors count
    alike for short and long tracks, so a few long tracks' noise does not decide the part per track
    (an unweighted fit of compute against duration let one 44 s outlier of 12 tracks put 11 ms per
    track into loudness, whose true part per track is near zero). The sums: the tracks' weight
    ``n``, ``x`` of 1 / duration (1/s), ``y`` of compute / duration, ``xx`` of 1 / duration²
    and ``xy`` of compute / duration²."""

    n: float = 0.0
    x: float = 0.0
    y: float = 0.0
    xx: float = 0.0
    xy: float = 0.0

    def add(self, duration: float, seconds: float) -> Fit:
        """These sums with one more track of ``duration`` audio seconds and ``seconds`` of compute."""
        inv = 1.0 / duration
        return Fit(self.n + 1, self.x + inv, self.y + seconds * inv, self.xx + inv * inv,
                   self.xy + seconds * inv * inv)

    def plus(self, other: Fit, *, weight: float = 1.0) -> Fit:
        """These sums and ``other``'s times ``weight`` (:data:`DECAY` blends a stored history)."""
        return Fit(self.n + weight * other.n, self.x + weight * other.x, self.y + weight * other.y,
                   self.xx + weight * other.xx, self.xy + weight * other.xy)

    def line(self) -> tuple[float, float] | None:
        """``(per_track_s, per_second)`` of the fitted line, or ``None`` when the durations are too
        alike (:data:`MIN_SPREAD`) or the fit is not a cost (a negative part)."""
        if self.n < 2 or self.x <= 0:
            return None
        mean_x, mean_y = self.x / self.n, self.y / self.n
        var = self.xx / self.n - mean_x * mean_x
        if var <= (MIN_SPREAD * mean_x) ** 2:
            return None
        per_track = (self.xy / self.n - mean_x * mean_y) / var
        per_second = mean_y - per_track * mean_x
        if per_second <= 0 or per_track < 0:
            return None
        return per_track, per_second

    def as_list(self) -> list[float]:
        return [float(f"{v:.6g}") for v in (self.n, self.x, self.y, self.xx, self.xy)]

    @classmethod
    def from_list(cls, value: Any) -> Fit:
        """The sums written by :meth:`as_list`; empty for anything else (rates saved before fits)."""
        try:
            n, x, y, xx, xy = (float(v) for v in value)
        except (TypeError, ValueError):
            return cls()
        return cls(n, x, y, xx, xy) if min(n, x, y, xx, xy) >= 0 else cls()


@dataclass(frozen=True)
class Rate:
    """Blended compute seconds and audio seconds behind one rate."""

    compute_s: float
    audio_s: float
    tracks: int = 0
    updated: str = ""
    #: The shared steps the analyzer read in the last run that measured it.
    uses: tuple[str, ...] = ()
    fit: Fit = Fit()

    @property
    def per_audio_second(self) -> float:
        """Seconds of compute per second of audio."""
        return self.compute_s / self.audio_s if self.audio_s > 0 else float("nan")

    def seconds(self, duration: float) -> float:
        """Expected compute seconds for one track of ``duration`` seconds: the fitted line when
        there is one (:meth:`Fit.line`), else the ratio times the duration."""
        line = self.fit.line()
        if line is None:
            return self.per_audio_second * duration
        per_track, per_second = line
        return per_track + per_second * duration

    def as_dict(self) -> dict[str, Any]:
        out = {"compute_s": round(self.compute_s, 4), "audio_s": round(self.audio_s, 3),
               "tracks": self.tracks, "updated": self.updated}
        if self.fit.n:
            out["fit"] = self.fit.as_list()
        return {**out, "uses": list(self.uses)} if self.uses else out


def rate_key(analyzer: str, device: str, params_hash: str) -> str:
    return f"{analyzer}|{device}|{params_hash}"


class RateBook:
    """The rates of one machine, read from (and written back to) the rates file."""

    def __init__(self, path: Path | None = None, *, machine_id: str | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.machine_id = machine_id or machine_key()
        self._rates: dict[str, Rate] = {}
        self._observed: dict[str, Rate] = {}
        self._startups: dict[str, list[float]] = {}
        self._observed_startups: dict[str, list[float]] = {}
        self._load()

    def _read_file(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable rates file %s: %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) and data.get("format") == FORMAT else {}

    def _load(self) -> None:
        entry = self._read_file().get("machines", {}).get(self.machine_id, {})
        for key, value in (entry.get("startup") or {}).items():
            try:
                self._startups[key] = [float(v) for v in value][-STARTUP_KEEP:]
            except (TypeError, ValueError):
                continue
        for key, value in (entry.get("rates") or {}).items():
            try:
                self._rates[key] = Rate(float(value["compute_s"]), float(value["audio_s"]),
                                        int(value.get("tracks", 0)), str(value.get("updated", "")),
                                        tuple(str(u) for u in value.get("uses") or ()),
                                        Fit.from_list(value.get("fit")))
            except (KeyError, TypeError, ValueError):
                continue

    def get(self, analyzer: str, device: str, params_hash: str) -> Rate | None:
        """The stored rate, or ``None`` when no run on this machine measured it."""
        rate = self._rates.get(rate_key(analyzer, device, params_hash))
        if rate is None or rate.audio_s <= 0 or rate.compute_s < 0:
            return None
        return rate

    def startup(self, key: str) -> float | None:
        """Seconds from a run's start to its first result, less that track's compute, for the
        set of analyzers ``key`` (:func:`startup_key`): the median of the last runs on this machine,
        or ``None`` when none ran that set."""
        values = self._startups.get(key)
        return statistics.median(values) if values else None

    def startup_estimate(self, labels: dict[str, str], executor: str = "local"
                         ) -> tuple[float | None, str | None]:
        """``(seconds, from_key)``: the start-up of a run of ``labels`` (``{name: device}``) with
        ``executor``. Measured for exactly this set, ``from_key`` is ``None``; else the start-up
        is taken from the closest set measured with the same executor, whose key ``from_key`` is:
        the smallest one holding every analyzer of ``labels`` (an upper bound: more imports, more
        models), else the largest one held by ``labels`` (a lower bound), ties to the larger
        start-up. ``(None, None)`` when no run on this machine measured any of them."""
        key = startup_key(labels, executor)
        if self._startups.get(key) or not labels:
            return self.startup(key), None
        wanted = frozenset(_startup_parts(key)[1])
        supersets, subsets = [], []
        for other, values in self._startups.items():
            other_executor, items = _startup_parts(other)
            if not values or other_executor != executor:
                continue
            measured, median = frozenset(items), statistics.median(values)
            if measured > wanted:
                supersets.append((len(measured), -median, other))
            elif measured < wanted:
                subsets.append((-len(measured), -median, other))
        for candidates in (supersets, subsets):
            if candidates:
                _, median, nearest = min(candidates)
                return -median, nearest
        return None, None

    def coordinator_per_track(self, executor: str = "local") -> float | None:
        """Seconds of the coordinator's own work per track (:data:`COORDINATOR`) that earlier runs
        with ``executor`` measured on this machine, or ``None`` when none did."""
        rate = self.get(COORDINATOR, executor, "")
        return None if rate is None else rate.per_audio_second  # its "audio" counts tracks

    def observe_coordinator(self, executor: str, seconds: float, tracks: int) -> None:
        """Add a run's coordinator work: ``seconds`` over ``tracks`` tracks (kept until :meth:`save`)."""
        if seconds >= 0 and tracks > 0:
            self.observe(COORDINATOR, executor, "", compute_s=seconds, audio_s=float(tracks),
                         tracks=tracks)

    def observe_startup(self, key: str, seconds: float) -> None:
        """Add a run's start-up (kept in memory until :meth:`save`)."""
        if seconds >= 0:
            self._observed_startups.setdefault(key, []).append(seconds)

    def shared_rate(self, step: str) -> Rate | None:
        """The rate of the shared ``step`` (rated as :func:`shared_name`), or ``None`` when no run
        on this machine measured it."""
        return self.get(shared_name(step), "cpu", "")

    def observe(self, analyzer: str, device: str, params_hash: str, *, compute_s: float,
                audio_s: float, tracks: int, uses: tuple[str, ...] = (),
                fit: Fit | None = None) -> None:
        """Add a run's measurement (kept in memory until :meth:`save`); ``fit``: the sums over
        its tracks one by one, when known."""
        if audio_s <= 0 or tracks <= 0:
            return
        key = rate_key(analyzer, device, params_hash)
        prev = self._observed.get(key)
        fit = fit or Fit()
        if prev is not None:
            compute_s, audio_s, tracks = (prev.compute_s + compute_s, prev.audio_s + audio_s,
                                          prev.tracks + tracks)
            uses = tuple(sorted(set(prev.uses) | set(uses)))
            fit = prev.fit.plus(fit)
        self._observed[key] = Rate(compute_s, audio_s, tracks, uses=tuple(uses), fit=fit)

    def save(self) -> None:
        """Blend the observed rates into the file (locked, merged, atomic). Errors are logged only:
        a read-only home must not fail a run."""
        if not self._observed and not self._observed_startups:
            return
        from filelock import FileLock, Timeout

        from ..core.fsutil import atomic_write_bytes

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path) + ".lock", timeout=10):
                data = self._read_file() or {"format": FORMAT, "machines": {}}
                entry = data.setdefault("machines", {}).setdefault(self.machine_id, {})
                entry["machine"] = machine()
                rates = entry.setdefault("rates", {})
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                for key, obs in self._observed.items():
                    old = rates.get(key) or {}
                    try:
                        compute = DECAY * float(old.get("compute_s", 0.0)) + obs.compute_s
                        audio = DECAY * float(old.get("audio_s", 0.0)) + obs.audio_s
                        tracks = int(old.get("tracks", 0)) + obs.tracks
                    except (TypeError, ValueError):
                        compute, audio, tracks = obs.compute_s, obs.audio_s, obs.tracks
                    fit = obs.fit.plus(Fit.from_list(old.get("fit")), weight=DECAY)
                    rate = Rate(compute, audio, tracks, stamp, obs.uses, fit)
                    rates[key] = rate.as_dict()
                    self._rates[key] = rate
                startups = entry.setdefault("startup", {})
                for key, values in self._observed_startups.items():
                    old = startups.get(key) if isinstance(startups.get(key), list) else []
                    old = [v for v in old if isinstance(v, (int, float))]
                    kept = [round(float(v), 3) for v in [*old, *values]][-STARTUP_KEEP:]
                    startups[key] = self._startups[key] = kept
                text = json.dumps(data, indent=1, sort_keys=True) + "\n"
                atomic_write_bytes(self.path, text.encode("utf-8"))
            self._observed.clear()
            self._observed_startups.clear()
        except (OSError, Timeout) as exc:
            log.warning("could not update the rates file %s: %s", self.path, exc)
