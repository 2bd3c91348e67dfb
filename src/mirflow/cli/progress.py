"""Rich progress display for runs: a bar with tracks/s, ETA and failures so far.

The library reports progress through a plain callback (``progress(event, **data)``); this module
turns those events into a live display. It is used by the CLI only.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn,
                           Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class _RateColumn(ProgressColumn):
    """Tracks per second over the whole run so far."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:.2f} tracks/s", style="progress.data.speed")


class RunProgress:
    """Context manager; pass :meth:`callback` to :func:`mirflow.run.coordinator.run`."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: Any = None
        self._started = time.perf_counter()

    def __enter__(self) -> "RunProgress":
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("[bold]analysing"), BarColumn(), MofNCompleteColumn(),
                _RateColumn(), TextColumn("eta"), TimeRemainingColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[failures]}"), console=self.console, transient=False)
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def callback(self, event: str, **data: Any) -> None:
        if self._progress is None:
            return
        if event == "plan":
            self._task = self._progress.add_task("run", total=data["due"], failures="")
            for name, reason in data.get("unavailable", {}).items():
                self._progress.console.print(f"[yellow]{name} unavailable:[/] {reason}")
        elif event == "track" and self._task is not None:
            failures = data.get("failures", 0)
            self._progress.update(self._task, advance=1,
                                  failures=f"[red]{failures} failed[/]" if failures else "")
        elif event == "stopping":
            self._progress.console.print(
                f"[yellow]stopping: finishing {data.get('in_flight', 0)} track(s) in flight "
                "(Ctrl-C again to abandon them)[/]")
        elif event == "abandoning":
            self._progress.console.print(
                f"[yellow]abandoned {data.get('abandoned', 0)} track(s) in flight; "
                "their sidecars are unchanged[/]")
