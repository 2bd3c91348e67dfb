"""Timing of a run: track durations, per-analyzer compute, per-stage busy time, accelerator use.

The coordinator drives one :class:`Timing` per run with a handful of calls (``planned``, ``poll``,
``track_done``, ``finish``); everything else about timing lives here:

* **Durations** come from file headers (``soundfile.info``, else PyAV's container metadata), never
  from decoding, read once per plan in a background thread so dispatching is not delayed.
* **Per analyzer**: tracks, compute seconds (as measured in the workers) and audio seconds, hence
  *x realtime* = audio seconds / compute seconds (per worker: with 2 workers the run is about twice
  as fast as one analyzer's figure). Decoding the mix is not in it: the mix is decoded when an
  analyzer first reads it (or by the GPU lane's decode threads), and that time is its own row,
  ``decode``, with its own rate, so an analyzer's rate does not depend on which ran first. So is
  each *shared step* (the mono view resampled to 22.05 kHz and its STFT, which spectral, tonal and
  rhythm all read): ``shared``, one row per step, and each analyzer's rate records the steps it
  reads, so an estimate counts a step once per track when any due analyzer reads it.
* **Per stage**: the busy fraction, busy seconds / (slots x wall seconds). An executor that knows its
  stages exposes ``stages`` (``{stage: (slots, [analyzer, ...])}``) or reports busy seconds itself
  through :meth:`Timing.stage_busy`; otherwise every CPU analyzer counts towards one ``workers``
  stage (slots = worker processes) and GPU analyzers on an accelerator towards a ``gpu`` stage. Busy
  time there is analyzer compute, plus decoding for the CPU workers (sidecar writes and hand-offs
  are not included), so it is a lower bound.
* **Per node**: an executor spanning machines (Ray) offers ``node_report()``; the report then has
  ``nodes``: per node address, the tracks computed there and its workers' busy seconds.
* **Coordinator**: its own work (leasing, planning under the lease, merging and writing sidecars,
  its helper threads receiving results), as busy seconds, a fraction of wall time and milliseconds
  per track. With many short tracks it, not the workers, is the bound, so its per-track cost is
  rated too (:meth:`RateBook.coordinator_per_track`) and estimates count it as a stage of its own.
* **Accelerator**: the fraction of wall time the GPU was busy, sampled with NVML (``pynvml``, from the
  ``nvidia-ml-py`` package) from the coordinator, whichever process uses the GPU; ``None`` with a
  note ("n/a") without an accelerator or without NVML.
* **Rates** (:mod:`mirflow.run.rates`): at the end of the run every analyzer's compute per audio
  second is blended into the machine's rates file, and the next plan or progress bar uses it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analyzers.base import Analyzer
from ..core.dataset import Track
from ..core.sidecar import AnalyzerResult
from .estimate import RunCost, lone_track_threads
from .rates import DECODE, Fit, RateBook, shared_name, startup_key

log = logging.getLogger(__name__)

#: The coordinator's per-track rate is recorded only from runs where its own work took at least this
#: share of its dispatch loop (:meth:`Timing.coordinator_busy`).
COORDINATOR_RATED_SHARE = 0.25


# -- durations ------------------------------------------------------------------------------------
def header_duration(path: str | os.PathLike[str]) -> float | None:
    """Duration in seconds from the file header (no decoding); ``None`` when it cannot be read."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.samplerate > 0 and info.frames > 0:
            return info.frames / info.samplerate
    except Exception:  # noqa: BLE001 - libsndfile refuses e.g. MP3/AAC: ask PyAV
        pass
    try:
        import av

        with av.open(str(path)) as container:
            if container.duration is not None:
                return container.duration / 1_000_000  # av.time_base: microseconds
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is not None and stream.duration is not None and stream.time_base:
                return float(stream.duration * stream.time_base)
    except Exception:  # noqa: BLE001 - unreadable file: it will fail (and be reported) when decoded
        return None
    return None


class Durations:
    """Header durations of tracks, read once (optionally in a background thread) and cached."""

    def __init__(self) -> None:
        self._cache: dict[Path, float | None] = {}

    def get(self, track: Track) -> float | None:
        if track.mix not in self._cache:
            self._cache[track.mix] = header_duration(track.mix)
        return self._cache[track.mix]

    def read_all(self, tracks: Iterable[Track]) -> dict[Path, float | None]:
        return {t.mix: self.get(t) for t in tracks}


# -- devices --------------------------------------------------------------------------------------
def device_labels(analyzers: dict[str, Analyzer], requested: str) -> dict[str, str]:
    """The device each analyzer runs on, as a rates key: ``cpu`` or e.g. ``cuda:NVIDIA H200``.

    Only GPU analyzers with an accelerator requested (or ``auto``) need a look-up, which imports
    PyTorch; an unresolvable device counts as the CPU (the run itself reports the error)."""
    labels = {n: "cpu" for n in analyzers}
    gpu = [n for n, a in analyzers.items() if a.device == "gpu"]
    if gpu and requested != "cpu":
        from ..core.devices import resolve
        from ..core.errors import ConfigError

        try:
            dev = resolve(requested)
        except ConfigError:
            return labels
        if dev.accelerator:
            for n in gpu:
                if analyzers[n].accelerated(str(dev)):  # else it runs on the CPU workers
                    labels[n] = f"{dev.kind}:{dev.name}" if dev.name else str(dev)
    return labels


# -- accelerator ----------------------------------------------------------------------------------
class AcceleratorMonitor:
    """Samples a CUDA device's utilisation with NVML in a thread; :meth:`stop` returns the busy
    fraction (mean of NVML's "percent of time a kernel was running" samples) or ``None``."""

    def __init__(self, index: int = 0, *, interval: float = 0.2) -> None:
        self.index = index
        self.interval = interval
        self.note = ""
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        self._handle: Any = None

    def _physical_index(self) -> int:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        try:
            return int(visible[self.index])
        except (ValueError, IndexError):
            return self.index

    def start(self) -> bool:
        try:
            import pynvml
        except ImportError:
            self.note = "n/a: NVML not installed (pip install nvidia-ml-py, or mirflow[gpu])"
            return False
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self._physical_index())
        except Exception as exc:  # noqa: BLE001 - pynvml.NVMLError and friends
            self.note = f"n/a: NVML unavailable ({exc})"
            return False
        self._nvml = pynvml
        self._thread = threading.Thread(target=self._loop, name="mirflow-nvml", daemon=True)
        self._thread.start()
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu / 100.0)
            except Exception:  # noqa: BLE001
                return

    def stop(self) -> float | None:
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
        if not self._samples:
            self.note = "n/a: no NVML sample (run too short)"
            return None
        return sum(self._samples) / len(self._samples)


def phase_text(steps: Iterable[tuple[str, str]]) -> str:
    """What warming-up workers are doing, for the progress display (``""`` when nothing is known).

    ``steps`` holds one ``(step, analyzer)`` per busy worker, steps being ``setup`` (models loaded,
    numba code compiled or read from its cache), ``decode`` and ``analyze``."""
    setups = sorted({a for step, a in steps if step == "setup" and a})
    if setups:
        return f"warming up: setting up {', '.join(setups)} (loading models, compiling)"
    steps = list(steps)
    if any(step == "decode" for step, _ in steps):
        return "warming up: decoding the first tracks"
    running = sorted({a for step, a in steps if step == "analyze" and a})
    return f"analysing the first tracks ({', '.join(running)})" if running else ""


# -- the run's timing -----------------------------------------------------------------------------
@dataclass
class _Acc:
    tracks: int = 0
    compute_s: float = 0.0
    audio_s: float = 0.0
    apart_s: float = 0.0  # decoding and shared steps in this analyzer's calls (its stage was busy)
    fit: Fit = Fit()  # the tracks of known duration one by one, for the rate's line

    def add(self, seconds: float, duration: float | None) -> None:
        """One more track: ``seconds`` of compute on ``duration`` seconds of audio (``None``:
        unknown, counted in the totals only)."""
        self.tracks += 1
        self.compute_s += seconds
        self.audio_s += duration or 0.0
        if duration:
            self.fit = self.fit.add(duration, seconds)


class Timing:
    """Timing of one run; see the module docstring. ``rates`` may be shared with an estimate."""

    def __init__(self, analyzers: dict[str, Analyzer], *, unavailable: dict[str, str],
                 device: str = "auto", workers: int = 1, rates: RateBook | None = None,
                 started: float | None = None, executor: str = "local",
                 cores: int = 0) -> None:
        self.analyzers = {n: a for n, a in analyzers.items() if n not in unavailable}
        self.device = device
        self.executor = executor
        self.workers = max(1, workers)
        #: The CPU workers' core budget, when they may use more threads than there are workers
        #: (the local executor's elastic threads): the ``workers`` stage's slots.
        self.cores = max(self.workers, cores)
        self.rates = rates
        self.durations = Durations()
        self.started = time.perf_counter() if started is None else started
        self.first_result_s: float | None = None
        self.first_compute_s = 0.0  # the first finished track's compute (all its analyzers)
        self.due_names: set[str] = set()  # the analyzers due on some track of the run
        self.labels: dict[str, str] | None = None
        self._acc = {n: _Acc() for n in self.analyzers}
        self._decode = _Acc()  # decoding the mixes, wherever an analyzer first read one
        self._shared: dict[str, _Acc] = {}  # the shared steps, wherever first computed
        self._uses: dict[str, set[str]] = {}  # the shared steps each analyzer read
        self._stage_busy: dict[str, float] = {}
        self._stage_slots: dict[str, int] = {}
        self._estimate: dict[str, Any] | None = None
        self._estimate_sent = False
        self._thread: threading.Thread | None = None
        self._monitor: AcceleratorMonitor | None = None
        self._accel_note = "n/a: no accelerator used"
        self._phase = ""
        self._tracks_done = 0
        self._coordinator_s: float | None = None
        self._coordinator_loop_s = 0.0

    # -- plan ----------------------------------------------------------------------------------
    def planned(self, root: Path, due: dict[Track, tuple[str, ...]]) -> None:
        """Start reading durations, device labels and rates for the due work in the background."""
        items = list(due.items())
        self.due_names = {n for names in due.values() for n in names if n in self.analyzers}

        def work() -> None:
            try:
                self._estimate = self._build_estimate(root, items)
            except Exception:  # noqa: BLE001 - an estimate must never break a run
                log.debug("estimate failed", exc_info=True)

        self._thread = threading.Thread(target=work, name="mirflow-estimate", daemon=True)
        self._thread.start()

    def _build_estimate(self, root: Path, items: list[tuple[Track, tuple[str, ...]]]) -> dict[str, Any]:
        self.labels = device_labels(self.analyzers, self.device)
        self._start_monitor()
        if self.rates is None:
            self.rates = RateBook()
        cost = RunCost(self.rates, self.analyzers, self.labels,
                       threads=lone_track_threads(self.executor, self.cores))
        durations = {track.relpath(root): self.durations.get(track) or 0.0 for track, _ in items}
        weights = {track.relpath(root): cost.add(durations[track.relpath(root)], names)
                   for track, names in items}
        known = not cost.missing
        if not known:  # without every rate, weigh by audio duration alone
            weights = dict(durations)
        coordinator = (self.rates.coordinator_per_track(self.executor) or 0.0) * len(items)
        eta = cost.seconds(coordinator, workers=self.cores, executor=self.executor) if known else None
        return {"weights": weights, "durations": durations, "audio_s": sum(durations.values()),
                "eta_s": eta,
                "by": "rates" if known else "audio duration",
                "startup_s": self.rates.startup_estimate(self._due_labels(), self.executor)[0]}

    def _due_labels(self) -> dict[str, str]:
        labels = self.labels or {}
        return {n: labels.get(n, "cpu") for n in self.due_names}

    def _start_monitor(self) -> None:
        accel = {lab for lab in (self.labels or {}).values() if lab != "cpu"}
        if not accel:
            return
        if not any(lab.startswith("cuda") for lab in accel):
            self._accel_note = "n/a: utilisation is only measured on CUDA devices (NVML)"
            return
        from ..core.devices import resolve

        monitor = AcceleratorMonitor(resolve(self.device).index or 0)
        if monitor.start():
            self._monitor = monitor
        else:
            self._accel_note = monitor.note

    def poll(self, emit: Callable[..., None], executor: Any = None) -> None:
        """Emit the ``estimate`` progress event once the background estimate is ready, and, until
        the first track is done, the warm-up phase the workers report: an executor that offers
        ``phases()`` (the ``(step, analyzer)`` each busy worker is in, e.g. ``("setup",
        "separation")``) turns into ``phase`` events such as ``warming up: setting up separation
        (loading models, compiling)``."""
        if not self._estimate_sent and self._estimate is not None:
            self._estimate_sent = True
            emit("estimate", **self._estimate)
        phases = getattr(executor, "phases", None)
        if self.first_result_s is not None or not callable(phases):
            return
        try:
            steps = list(phases())
        except Exception:  # noqa: BLE001 - a display detail must never break a run
            return
        text = phase_text(steps)
        if text and text != self._phase:
            self._phase = text
            emit("phase", name=text)

    # -- run -----------------------------------------------------------------------------------
    def track_done(self, track: Track, results: dict[str, Any]) -> None:
        """Account one finished track (``results``: ``{analyzer: AnalyzerResult}``)."""
        if self.first_result_s is None:
            self.first_result_s = time.perf_counter() - self.started
            self.first_compute_s = sum(
                float(r.seconds or 0.0) + r.decode_seconds + sum(r.shared_seconds.values())
                for r in results.values() if isinstance(r, AnalyzerResult))
        self._tracks_done += 1
        duration = self.durations.get(track)
        for name, res in results.items():
            acc = self._acc.get(name)
            if acc is None:
                continue
            apart = [(self._decode, res.decode_seconds),
                     *((self._shared.setdefault(step, _Acc()), seconds)
                       for step, seconds in res.shared_seconds.items())]
            for step_acc, seconds in apart:
                if seconds > 0:
                    acc.apart_s += seconds
                    step_acc.add(seconds, duration)
            if res.status != "ok":
                continue
            self._uses.setdefault(name, set()).update(res.uses)
            acc.add(float(res.seconds or 0.0), duration)

    def stage_busy(self, stage: str, seconds: float, *, slots: int = 1) -> None:
        """For executors that measure their stages: add busy seconds of ``stage``."""
        self._stage_busy[stage] = self._stage_busy.get(stage, 0.0) + seconds
        self._stage_slots[stage] = max(self._stage_slots.get(stage, 1), slots)

    def coordinator_busy(self, seconds: float, loop_s: float) -> None:
        """The coordinator's own work in the run (``seconds``: leasing, planning, merging and
        writing sidecars, and its process's helper threads receiving results) over its dispatch
        loop of ``loop_s``; reported as ``coordinator``, and rated per track when it was busy at least
        :data:`COORDINATOR_RATED_SHARE` of the loop (else its share is too small to matter to an
        estimate, and its per-track figure would carry time-based costs such as the progress display)."""
        self._coordinator_s = seconds
        self._coordinator_loop_s = loop_s

    # -- end -----------------------------------------------------------------------------------
    def finish(self, wall_s: float, executor: Any = None) -> dict[str, Any]:
        """The timing report (also saves the measured rates)."""
        if self._thread is not None:
            self._thread.join(timeout=30)
        labels = self.labels or {n: "cpu" for n in self.analyzers}
        busy = self._monitor.stop() if self._monitor else None
        startup = (None if self.first_result_s is None
                   else max(0.0, self.first_result_s - self.first_compute_s))
        if startup is not None and self.rates is not None and self.due_names:
            self.rates.observe_startup(startup_key(self._due_labels(), self.executor), startup)
        report: dict[str, Any] = {
            "wall_s": round(wall_s, 3),
            "first_result_s": None if self.first_result_s is None else round(self.first_result_s, 3),
            "startup_s": None if startup is None else round(startup, 3),
            "audio_s": round(max((a.audio_s for a in self._acc.values()), default=0.0), 3),
            "analyzers": {}, "stages": {},
            "accelerator": {"device": next((lab for lab in labels.values() if lab != "cpu"), None),
                            "busy_fraction": None if busy is None else round(busy, 3),
                            "source": "nvml" if busy is not None else
                            (self._monitor.note if self._monitor else self._accel_note)},
        }
        for name, acc in self._acc.items():
            if not acc.tracks:
                continue
            report["analyzers"][name] = {
                "tracks": acc.tracks, "compute_s": round(acc.compute_s, 3),
                "audio_s": round(acc.audio_s, 3), "device": labels[name],
                "x_realtime": round(acc.audio_s / acc.compute_s, 2) if acc.compute_s > 0 else None}
            if self.rates is not None and acc.audio_s > 0:
                self.rates.observe(name, labels[name], self.analyzers[name].params_hash(),
                                   compute_s=acc.compute_s, audio_s=acc.audio_s, tracks=acc.tracks,
                                   uses=tuple(sorted(self._uses.get(name, ()))), fit=acc.fit)
        report["decode"] = self._step_report(DECODE, self._decode)
        report["shared"] = {step: self._step_report(shared_name(step), acc)
                            for step, acc in sorted(self._shared.items())}
        report["stages"] = self._stages(wall_s, labels, executor)
        if self._coordinator_s is not None:
            report["coordinator"] = self._coordinator_report(wall_s)
        node_report = getattr(executor, "node_report", None)  # executors spanning machines
        if callable(node_report):
            report["nodes"] = node_report()
        if self.rates is not None:
            self.rates.save()
        return report

    def _coordinator_report(self, wall_s: float) -> dict[str, Any]:
        busy, tracks = self._coordinator_s or 0.0, self._tracks_done
        if (self.rates is not None and tracks
                and busy >= COORDINATOR_RATED_SHARE * self._coordinator_loop_s):
            self.rates.observe_coordinator(self.executor, busy, tracks)
        return {"tracks": tracks, "busy_s": round(busy, 3),
                "busy_fraction": round(min(1.0, busy / wall_s), 3) if wall_s > 0 else None,
                "ms_per_track": round(1000 * busy / tracks, 3) if tracks else None}

    def _step_report(self, rated_as: str, acc: _Acc) -> dict[str, Any]:
        """A decode or shared-step row of the report; its rate is saved as ``rated_as``."""
        if self.rates is not None and acc.audio_s > 0:
            self.rates.observe(rated_as, "cpu", "", compute_s=acc.compute_s, audio_s=acc.audio_s,
                               tracks=acc.tracks, fit=acc.fit)
        return {"tracks": acc.tracks, "compute_s": round(acc.compute_s, 3),
                "audio_s": round(acc.audio_s, 3),
                "x_realtime": round(acc.audio_s / acc.compute_s, 2) if acc.compute_s > 0 else None}

    def _stages(self, wall_s: float, labels: dict[str, str], executor: Any) -> dict[str, Any]:
        busy = dict(self._stage_busy)
        slots = dict(self._stage_slots)
        declared = getattr(executor, "stages", None)
        if not busy:
            if isinstance(declared, dict) and declared:
                groups = {stage: (int(s), list(names)) for stage, (s, names) in declared.items()}
            else:
                gpu = [n for n in self._acc if labels.get(n, "cpu") != "cpu"]
                groups = {"workers": (self.cores, [n for n in self._acc if n not in gpu])}
                if gpu:
                    groups["gpu"] = (1, gpu)
            for stage, (n_slots, names) in groups.items():
                # a CPU analyzer's worker was busy decoding too; the GPU lane decodes in threads
                # beside the accelerator, which was not busy with it
                busy[stage] = sum(self._acc[n].compute_s + (
                    self._acc[n].apart_s if labels.get(n, "cpu") == "cpu" else 0.0)
                    for n in names if n in self._acc)
                slots[stage] = max(1, n_slots)
        out = {}
        for stage, seconds in busy.items():
            n = slots.get(stage, 1)
            out[stage] = {"slots": n, "busy_s": round(seconds, 3),
                          "busy_fraction": round(min(1.0, seconds / (n * wall_s)), 3)
                          if wall_s > 0 else None}
            if stage == "workers" and self.executor == "local":
                out[stage]["processes"] = self.workers
        return out
