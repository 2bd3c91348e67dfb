"""Progress: work-weighted ETA, warm-up phase, periodic plain lines without a terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from mirflow.cli.progress import ProgressState, RunProgress


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_weighted_by_audio_not_tracks() -> None:
    """Nine short tracks done, one 9-minute track left: the ETA stays minutes, not one second."""
    clock = Clock()
    s = ProgressState(clock)
    s.event("plan", due=10)
    s.event("phase", name="warming up")
    assert s.eta_s() is None  # no rates: unknown before the first track
    durations = {f"t{i}": 10.0 for i in range(9)} | {"long": 540.0}
    s.event("estimate", weights=durations, durations=durations, eta_s=None, by="audio duration")
    for i in range(9):
        clock.t += 2.0
        s.event("track", track=f"t{i}", failures=0)
    assert s.done == 9 and s.phase == "analysing"
    assert s.fraction == pytest.approx(90 / 630)
    # 18 s for 90 s of audio -> 540 s more audio takes about 108 s
    assert s.eta_s() == pytest.approx(108.0)
    assert s.realtime() == pytest.approx(5.0)
    clock.t += 100
    s.event("track", track="long", failures=1)
    assert s.eta_s() == 0.0 and s.fraction == 1.0 and s.failures == 1


def test_the_warm_up_is_not_extrapolated_over_the_run() -> None:
    """7 tracks, 2 workers, 6 s of warm-up, then a track every 0.3 s: after the first track the
    ETA is the plan's (about 2 s), not 6 s x 6 tracks; then the measured pace takes over."""
    clock = Clock()
    s = ProgressState(clock)
    s.event("plan", due=7)
    s.event("phase", name="warming up")
    weights = {f"t{i}": 0.6 for i in range(7)}
    s.event("estimate", weights=weights, durations=dict.fromkeys(weights, 60.0), eta_s=2.1, by="rates")
    clock.t = 6.0
    s.event("track", track="t0", failures=0)
    assert s.eta_s() == pytest.approx(2.1 * 6 / 7)
    for i in range(1, 6):
        clock.t += 0.3
        s.event("track", track=f"t{i}", failures=0)
    # 5 tracks in 1.5 s after the first: 0.3 s for the last one, from the pace alone by now
    assert s.eta_s() == pytest.approx(0.3)
    clock.t += 0.3
    s.event("track", track="t6", failures=0)
    assert s.eta_s() == 0.0


def test_without_rates_the_pace_after_the_first_track_decides() -> None:
    clock = Clock()
    s = ProgressState(clock)
    s.event("plan", due=4)
    s.event("phase", name="warming up")
    s.event("estimate", weights=dict.fromkeys("abcd", 10.0), durations=dict.fromkeys("abcd", 10.0),
            eta_s=None, by="audio duration")
    clock.t = 5.0
    s.event("track", track="a", failures=0)
    assert s.eta_s() == pytest.approx(15.0)  # one point: the pace from the start of the work
    clock.t = 6.0
    s.event("track", track="b", failures=0)
    assert s.eta_s() == pytest.approx(2.0)  # 1 s per track since the first one, 2 left


def test_rate_estimate_before_first_track() -> None:
    s = ProgressState(Clock())
    s.event("plan", due=2)
    s.event("estimate", weights={"a": 1.0, "b": 3.0}, durations={"a": 10.0, "b": 30.0},
            eta_s=2.0, by="rates")
    assert s.eta_s() == 2.0


def test_log_lines_without_terminal() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    with RunProgress(console, enabled=False, log_lines=True, interval_s=0) as prog:
        prog.callback("plan", tracks=3, due=2, unavailable={})
        prog.callback("phase", name="warming up: starting workers, loading models, compiling")
        prog.callback("estimate", weights={"a": 5.0, "b": 15.0}, durations={"a": 5.0, "b": 15.0},
                      eta_s=None, by="audio duration")
        prog.callback("track", track="a", failed=False, failures=0)
        prog.callback("track", track="b", failed=True, failures=1)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "plan: 2 track(s) with work due"
    assert lines[1].startswith("warming up")
    assert lines[2].startswith("progress: 1/2 tracks, 25% of the work")
    assert "eta" in lines[2] and "realtime" in lines[2]
    assert lines[3].startswith("progress: 2/2 tracks, 100% of the work") and "1 failed" in lines[3]
    assert len(lines) == 4  # the closing line is not repeated


def test_silent_when_disabled() -> None:
    buf = io.StringIO()
    with RunProgress(Console(file=buf), enabled=False, log_lines=False) as prog:
        prog.callback("plan", tracks=1, due=1, unavailable={})
        prog.callback("track", track="a", failed=False, failures=0)
    assert buf.getvalue() == ""


def test_the_start_up_counts_down_before_the_first_track() -> None:
    clock = Clock()
    s = ProgressState(clock)
    s.event("plan", due=4)
    s.event("estimate", weights=dict.fromkeys("abcd", 1.0), durations=dict.fromkeys("abcd", 30.0),
            eta_s=8.0, startup_s=3.0, by="rates")
    assert s.eta_s() == pytest.approx(11.0)
    clock.t = 2.0
    assert s.eta_s() == pytest.approx(9.0)
    clock.t = 5.0  # longer than earlier runs' start-up: the work is still all ahead
    assert s.eta_s() == pytest.approx(8.0)


def test_the_timing_report_names_the_coordinator_only_where_it_counts() -> None:
    import io

    from rich.console import Console

    from mirflow.cli.estimates import print_timing

    def printed(busy: float) -> str:
        out = io.StringIO()
        timing = {"audio_s": 10.0, "wall_s": 2.0, "first_result_s": 0.5,
                  "analyzers": {"loudness": {"tracks": 4, "compute_s": 0.1, "x_realtime": 100.0,
                                             "device": "cpu"}},
                  "stages": {"workers": {"slots": 2, "busy_s": 0.1, "busy_fraction": 0.025}},
                  "coordinator": {"tracks": 4, "busy_s": busy * 2.0, "busy_fraction": busy,
                                  "ms_per_track": busy * 500.0}}
        print_timing(Console(file=out, width=120), timing)
        return out.getvalue()

    assert "coordinator 80% (400.0 ms per track)" in printed(0.8)
    assert "workers 2% of 2" in printed(0.02) and "coordinator" not in printed(0.02)
