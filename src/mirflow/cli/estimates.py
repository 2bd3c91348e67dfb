"""Terminal rendering of ``mirflow plan`` and of the timing report at the end of ``mirflow run``.

Tables stay within 80 columns; every figure comes from :mod:`mirflow.run.forecast` or
:mod:`mirflow.run.timing` (the same numbers ``--json`` prints).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..run.rates import startup_analyzers

REASONS_SHOWN = 4  # per analyzer; --json lists every pair


def clock(seconds: float | None) -> str:
    """``1:02:03`` (h:mm:ss) for seconds, ``unknown`` for ``None``."""
    if seconds is None:
        return "unknown"
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def realtime(rate: float | None) -> str:
    """A rate in compute seconds per audio second as ``"57x"`` realtime (per worker)."""
    if rate is None or rate != rate:
        return "unknown"
    if rate <= 0:
        return "-"
    x = 1.0 / rate
    return f"{x:.0f}x" if x >= 10 else f"{x:.2g}x"


def print_plan(out: Console, report: Any) -> None:
    """The plan table, the reasons, and the ETA."""
    table = Table(title=f"{escape(report.dataset)}: {report.tracks} tracks, "
                        f"{report.due_tracks} with work due ({clock(report.audio_s)} of audio)")
    for col in ("analyzer", "due", "done", "failed", "blocked", "n/a", "speed", "estimate"):
        table.add_column(col, justify="left" if col == "analyzer" else "right")
    for name, p in report.analyzers.items():
        st = p.states
        table.add_row(name, str(p.due), str(st.get("done", 0)), str(st.get("failed", 0)),
                      str(st.get("blocked", 0)), str(st.get("unavailable", 0)),
                      realtime(p.rate) if p.due else "", clock(p.compute_s) if p.due else "")
    out.print(table)
    for name, p in report.analyzers.items():
        if not p.due:
            continue
        shown = p.reasons.most_common(REASONS_SHOWN)
        text = "; ".join(f"{n} {escape(reason)}" for reason, n in shown)
        more = len(p.reasons) - len(shown)
        out.print(f"  [bold]{name}[/] ({p.device}): {text}"
                  + (f"; {more} other reasons (see --json)" if more > 0 else ""), highlight=False)
    for name, p in report.analyzers.items():
        for reason, n in p.blocked.most_common(REASONS_SHOWN):
            out.print(f"  [yellow]{name}[/]: {n} track(s) blocked: {escape(reason)}", highlight=False)
    for name, p in report.analyzers.items():
        if p.states.get("failed"):
            out.print(f"  [red]{name}[/]: {p.states['failed']} track(s) failed before; "
                      "--retry-failed retries them", highlight=False)
    for name, reason in report.unavailable.items():
        out.print(f"  [yellow]{name} unavailable:[/] {escape(reason)}", highlight=False)
    if not report.due_tracks:
        out.print("[green]nothing to do: every track is up to date[/]")
        return
    if report.unknown_durations:
        out.print(f"  {report.unknown_durations} track(s) have no duration in their header "
                  "(counted as 0 s)")
    if report.eta_s is None:
        out.print(f"ETA unknown: no rate measured on this machine yet for "
                  f"{', '.join(report.missing_rates)} (every run records them: "
                  f"`mirflow run {escape(report.dataset)} --limit 5` with the same options "
                  f"measures them on a sample of 5 tracks, whose results are kept)")
    else:
        parts = [f"{what}: {clock(secs)}" for what, secs in
                 (("decoding", report.decode_s), ("shared steps", report.shared_s)) if secs]
        decoding = f" ({', '.join(parts)} of one worker's time)" if parts else ""
        if report.coordinator_s and report.coordinator_s >= 1.0:
            decoding += (f"; the coordinator's leases and sidecar writes take "
                         f"{clock(report.coordinator_s)}")
        if report.startup_s is None:
            startup = "start-up not included: no run on this machine measured it yet"
        elif report.startup_from:
            names = ", ".join(startup_analyzers(report.startup_from))
            startup = (f"start-up {clock(report.startup_s)} included, as measured for runs of "
                       f"{names}")
        else:
            startup = f"start-up {clock(report.startup_s)} included"
        # fewer tracks than cores: each track's worker is lent the idle cores
        lent = f" of {report.threads_per_track} threads" if report.threads_per_track > 1 else ""
        out.print(f"ETA {clock(report.eta_s)} with {report.workers} worker(s){lent}{decoding}, from rates "
                  f"measured by earlier runs on this machine ({startup})")
    if report.workers_before_memory:
        out.print(f"{report.workers} worker(s), not {report.workers_before_memory}: each keeps a copy of "
                  "its models, and more copies would not fit in half the memory budget "
                  "(choose with --workers, --cores or --max-memory)")


def print_timing(out: Console, timing: dict[str, Any]) -> None:
    """The timing report: per analyzer compute and x realtime, stage busy fractions, accelerator."""
    analyzers = timing.get("analyzers") or {}
    if not analyzers:
        return
    out.print(f"timing: {timing['audio_s']:.1f} s of audio in {timing['wall_s']:.1f} s, first "
              f"result after {timing['first_result_s'] or 0:.1f} s", highlight=False)
    table = Table()
    for col in ("analyzer", "tracks", "compute s", "x realtime", "device"):
        table.add_column(col, justify="left" if col in ("analyzer", "device") else "right")
    for name, a in analyzers.items():
        table.add_row(name, str(a["tracks"]), f"{a['compute_s']:.2f}",
                      "-" if a["x_realtime"] is None else f"{a['x_realtime']:.1f}",
                      escape(a["device"]))
    steps = {"(decode)": timing.get("decode") or {}}
    steps.update({f"({step})": row for step, row in (timing.get("shared") or {}).items()})
    for label, row in steps.items():
        if row.get("tracks"):
            table.add_row(escape(label), str(row["tracks"]), f"{row['compute_s']:.2f}",
                          "-" if row["x_realtime"] is None else f"{row['x_realtime']:.1f}", "cpu")
    out.print(table)
    stages = ", ".join(f"{name} {s['busy_fraction'] * 100:.0f}% of {s['slots']}"
                       for name, s in (timing.get("stages") or {}).items()
                       if s.get("busy_fraction") is not None)
    coordinator = timing.get("coordinator") or {}
    # shown where it counts: a coordinator busy a tenth of the run or more (many short tracks)
    if (coordinator.get("busy_fraction") or 0.0) >= 0.1 and coordinator.get("ms_per_track") is not None:
        stages += (", " if stages else "") + (
            f"coordinator {coordinator['busy_fraction'] * 100:.0f}% "
            f"({coordinator['ms_per_track']:.1f} ms per track)")
    if stages:
        out.print(f"busy: {stages}", highlight=False)
    acc = timing.get("accelerator") or {}
    if acc.get("device"):
        busy = acc.get("busy_fraction")
        out.print(f"accelerator {escape(acc['device'])}: "
                  + (f"busy {busy * 100:.0f}% of wall time" if busy is not None
                     else escape(acc.get("source") or "n/a")), highlight=False)
