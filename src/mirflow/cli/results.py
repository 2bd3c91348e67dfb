"""Commands that look at results: ``mirflow report`` (an HTML page) and ``mirflow listen``
(the mix with clicks on the detected beats). Mounted on the main group by :mod:`.commands`."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="FILE.html (one self-contained page; opens offline).")
@click.option("--max-rows", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Tracks listed in the page's table (charts always use every track).")
@click.option("--no-probe", is_flag=True, help="Skip reading audio headers (no durations, codecs).")
def report(dataset: Path, output: Path, max_rows: int, no_probe: bool) -> None:
    """Write an HTML report of DATASET: counts, failures by reason, distributions, outliers and a
    searchable track table."""
    from ..results.report import write_report

    started = time.perf_counter()
    path = write_report(dataset, output, max_rows=max_rows, probe=not no_probe)
    size = path.stat().st_size / 1e6
    console.print(f"wrote {escape(str(path))} ({size:.1f} MB) in {time.perf_counter() - started:.1f} s",
                  highlight=False, soft_wrap=True)


@click.command()
@click.argument("track", type=click.Path(path_type=Path, exists=True))
@click.option("--beats", "beats", is_flag=True, help="Add a click on every detected beat (from the sidecar).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="FILE.wav or FILE.flac")
@click.option("--click-db", type=float, default=-3.0, show_default=True, help="Click peak level (dBFS).")
@click.option("--mix-db", type=float, default=-6.0, show_default=True, help="Gain applied to the mix (dB).")
def listen(track: Path, beats: bool, output: Path, click_db: float, mix_db: float) -> None:
    """Write TRACK's mix with clicks on its detected beats, to check a tempo by ear.

    TRACK is a track folder (or its full_mix file) analysed with the rhythm analyzer."""
    from ..results.listen import write_beat_check

    if not beats:
        raise click.UsageError("say what to add: --beats")
    info = write_beat_check(track, output, click_dbfs=click_db, mix_gain_db=mix_db)
    bpm = info["bpm"]
    console.print(f"wrote {escape(str(output))}: {info['clicks']} beat clicks"
                  + (f" at {bpm:g} BPM" if isinstance(bpm, (int, float)) else ""), highlight=False,
                  soft_wrap=True)


__all__ = ["listen", "report"]
