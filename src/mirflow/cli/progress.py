"""Progress of a run for people: a live bar on a terminal, periodic log lines otherwise.

The library reports progress through a plain callback (``progress(event, **data)``, see
:mod:`mirflow.run.coordinator`); this module turns those events into output. It is used by the CLI
only. Events: ``plan`` (tracks due), ``phase`` (warm-up: starting workers, loading models,
compiling), ``estimate`` (per-track weights from the machine's rates, or audio durations when some
rate is missing; header durations), ``track`` (one track finished), ``stopping``, ``abandoning``.

The ETA is weighted by work, not by track count: each track weighs its expected compute (rate x
duration for its due analyzers) or, without rates, its audio duration, so a 9-minute track left at
the end keeps the ETA at minutes, not one second. Before the first track finishes the ETA is the
rates' estimate (``unknown`` without rates); after, remaining weight / weight done per second since
the workers started.

Without a terminal (output to a file, a pipe, a batch job) one line is written every
``MIRFLOW_PROGRESS_INTERVAL`` seconds (default 10; also at the warm-up phase and at the end), even
while no track finishes: ``progress: 12/41 tracks, 31% of audio, 95x realtime, eta 0:01:23``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.text import Text

DEFAULT_INTERVAL_S = 10.0


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressState:
    """Counts, weights and the ETA of a run, fed by progress events (no output)."""

    def __init__(self, clock: Any = time.perf_counter) -> None:
        self.clock = clock
        self.started = clock()
        self.work_started: float | None = None
        self.phase = "planning"
        self.total = 0
        self.done = 0
        self.failures = 0
        self.finished: list[str] = []
        self.weights: dict[str, float] = {}
        self.durations: dict[str, float] = {}
        self.estimate_s: float | None = None
        self.startup_s: float | None = None  # the start-up earlier runs measured (median)
        self.weighted_by = "tracks"
        #: ``(time, fraction done)`` when the first track finished: the pace is measured from
        #: there, so the warm-up (seconds, once per run) is not extrapolated over the whole run.
        self.first_result: tuple[float, float] | None = None

    # -- events --------------------------------------------------------------------------------
    def event(self, event: str, **data: Any) -> None:
        if event == "plan":
            self.total = int(data.get("due", 0))
        elif event == "phase":
            self.phase = str(data.get("name", ""))
            if self.work_started is None:
                self.work_started = self.clock()
        elif event == "estimate":
            self.weights = {k: float(v) for k, v in (data.get("weights") or {}).items()}
            self.durations = {k: float(v) for k, v in (data.get("durations") or {}).items()}
            self.estimate_s = data.get("eta_s")
            self.startup_s = data.get("startup_s")
            self.weighted_by = str(data.get("by", "audio duration"))
        elif event == "track":
            self.failures = int(data.get("failures", self.failures))
            if not data.get("skipped"):
                self.phase = "analysing"
            self.done += 1
            self.finished.append(str(data.get("track", "")))
            if self.first_result is None:
                self.first_result = (self.clock(), self.fraction)

    # -- figures -------------------------------------------------------------------------------
    @property
    def fraction(self) -> float:
        """Fraction of the work done (weighted when weights are known, else by tracks)."""
        if self.weights:
            total = sum(self.weights.values())
            if total > 0:
                return min(1.0, sum(self.weights.get(t, 0.0) for t in self.finished) / total)
        return self.done / self.total if self.total else 0.0

    def audio_done_s(self) -> float:
        return sum(self.durations.get(t, 0.0) for t in self.finished)

    def eta_s(self) -> float | None:
        """Seconds left, or ``None`` when unknown.

        Before the first track: the plan's estimate (measured rates), plus what is left of the
        start-up earlier runs measured, counting down from the run's start. Then the
        pace since the first track finished, blended with the plan's estimate of what is left
        until a quarter of the work was seen at that pace; without rates, the pace alone (from the
        start of the work while only the first track is done)."""
        frac = self.fraction
        if frac >= 1.0:
            return 0.0
        if frac <= 0.0:
            if self.estimate_s is None or self.startup_s is None:
                return self.estimate_s
            return self.estimate_s + max(0.0, self.startup_s - (self.clock() - self.started))
        planned = None if self.estimate_s is None else self.estimate_s * (1.0 - frac)
        t1, f1 = self.first_result or (self.clock(), frac)
        if frac > f1 and self.clock() > t1:
            paced = (self.clock() - t1) * (1.0 - frac) / (frac - f1)
            if planned is None:
                return paced
            trust = min(1.0, (frac - f1) / 0.25)
            return trust * paced + (1.0 - trust) * planned
        if planned is not None:
            return planned
        since = self.work_started if self.work_started is not None else self.started
        return (self.clock() - since) * (1.0 - frac) / frac

    def realtime(self) -> float | None:
        """Audio seconds analysed per wall second since the workers started."""
        audio = self.audio_done_s()
        since = self.work_started if self.work_started is not None else self.started
        elapsed = self.clock() - since
        return audio / elapsed if audio > 0 and elapsed > 0 else None

    def line(self) -> str:
        """One plain log line."""
        parts = [f"{self.done}/{self.total} tracks"]
        if self.weights and self.weighted_by != "tracks":
            parts.append(f"{self.fraction * 100:.0f}% of the work")
        rt = self.realtime()
        if rt is not None:
            parts.append(f"{rt:.1f}x realtime")
        parts.append(f"eta {_clock(self.eta_s())}")
        if self.failures:
            parts.append(f"{self.failures} failed")
        phase = "" if self.phase == "analysing" else f" [{self.phase}]"
        return "progress: " + ", ".join(parts) + phase


class _EtaColumn(ProgressColumn):
    def __init__(self, state: ProgressState) -> None:
        super().__init__()
        self.state = state

    def render(self, task: Task) -> Text:
        rt = self.state.realtime()
        speed = f"{rt:.1f}x realtime  " if rt is not None else ""
        return Text(f"{speed}eta {_clock(self.state.eta_s())}", style="progress.remaining")


class RunProgress:
    """Context manager; pass :meth:`callback` to :func:`mirflow.run.coordinator.run`.

    ``enabled`` shows the live bar; ``log_lines`` writes periodic plain lines instead (for output
    that is not a terminal). Both off: silent."""

    def __init__(self, console: Console, *, enabled: bool = True, log_lines: bool = False,
                 interval_s: float | None = None) -> None:
        self.console = console
        self.enabled = enabled
        self.log_lines = log_lines and not enabled
        if interval_s is None:
            try:
                interval_s = float(os.environ.get("MIRFLOW_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))
            except ValueError:
                interval_s = DEFAULT_INTERVAL_S
        self.interval_s = max(0.0, interval_s)
        self.state = ProgressState()
        self._progress: Progress | None = None
        self._task: Any = None
        self._lock = threading.Lock()
        self._last_line = 0.0
        self._last_done = -1
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> "RunProgress":
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("[bold]{task.fields[phase]}"), BarColumn(),
                TextColumn("{task.fields[count]}"), _EtaColumn(self.state),
                TextColumn("{task.fields[failures]}"), console=self.console, transient=False)
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1)
        if self._progress is not None:
            self._progress.__exit__(*exc)
        elif self.log_lines and self.state.total and self.state.done \
                and self._last_done != self.state.done:
            self._print(self.state.line())

    # -- output --------------------------------------------------------------------------------
    def _print(self, text: str) -> None:
        with self._lock:
            self._last_line = time.perf_counter()
            self._last_done = self.state.done
            self.console.print(escape(text), highlight=False, soft_wrap=True)

    def _tick(self) -> None:
        wait = max(0.5, self.interval_s)
        while not self._stop.wait(wait):
            if time.perf_counter() - self._last_line >= self.interval_s:
                self._print(self.state.line())

    def _refresh(self) -> None:
        if self._progress is None or self._task is None:
            return
        s = self.state
        self._progress.update(self._task, completed=s.fraction * 1000, phase=escape(s.phase),
                              count=f"{s.done}/{s.total}",
                              failures=f"[red]{s.failures} failed[/]" if s.failures else "")

    def callback(self, event: str, **data: Any) -> None:
        phase_before = self.state.phase
        self.state.event(event, **data)
        if event == "plan":
            if self._progress is not None:
                self._task = self._progress.add_task("run", total=1000, phase="planning",
                                                     count=f"0/{self.state.total}", failures="")
                for name, reason in data.get("unavailable", {}).items():
                    self._progress.console.print(f"[yellow]{name} unavailable:[/] {escape(reason)}")
            elif self.log_lines and self.state.total:
                self._print(f"plan: {self.state.total} track(s) with work due")
                if self.interval_s > 0:
                    self._ticker = threading.Thread(target=self._tick, name="mirflow-progress",
                                                    daemon=True)
                    self._ticker.start()
        elif event == "phase" and self.log_lines:
            self._print(f"{self.state.phase}...")
        elif event == "track" and self.log_lines:
            if phase_before != self.state.phase or \
                    time.perf_counter() - self._last_line >= self.interval_s:
                self._print(self.state.line())
        elif event in ("stopping", "abandoning"):
            text = (f"stopping: finishing {data.get('in_flight', 0)} track(s) in flight "
                    "(Ctrl-C again to abandon them)" if event == "stopping" else
                    f"abandoned {data.get('abandoned', 0)} track(s) in flight; "
                    "their sidecars are unchanged")
            if self._progress is not None:
                self._progress.console.print(f"[yellow]{text}[/]")
            elif self.log_lines:
                self._print(text)
        self._refresh()
