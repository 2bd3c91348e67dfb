"""`mirflow plan` and the timing report, end to end through the real CLI (rates in an isolated
XDG cache, see conftest)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import mirflow, run_json, sidecar, sine, write_track


def _plan(*args: str) -> dict:
    proc = mirflow("plan", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_plan_run_plan(dataset: Path, _isolated_cache: Path) -> None:
    write_track(dataset, "short", sine(330.0, 1.0))
    write_track(dataset, "long", sine(220.0, 3.0))
    before = _plan(str(dataset), "-a", "loudness,spectral")
    assert before["due_tracks"] == 2 and before["audio_s"] == 4.0
    assert before["eta_s"] is None and set(before["missing_rates"]) == {"loudness", "spectral"}
    assert before["analyzers"]["loudness"]["reasons"] == {"new": 2}
    assert {(p["track"], p["analyzer"], p["reason"]) for p in before["due"]} >= {
        ("long", "loudness", "new"), ("short", "spectral", "new")}

    code, summary = run_json(str(dataset), "-a", "loudness,spectral", "-j", "1")
    assert code == 0
    timing = summary["timing"]
    loud = timing["analyzers"]["loudness"]
    assert loud["tracks"] == 2 and loud["audio_s"] == 4.0 and loud["device"] == "cpu"
    assert loud["x_realtime"] > 0 and loud["compute_s"] > 0
    assert timing["stages"]["workers"]["slots"] == 1
    assert 0 < timing["stages"]["workers"]["busy_fraction"] <= 1
    assert timing["accelerator"]["busy_fraction"] is None
    assert 0 < timing["first_result_s"] <= timing["wall_s"]
    assert (_isolated_cache / "mirflow" / "rates.json").is_file()

    done = _plan(str(dataset), "-a", "loudness,spectral")
    assert done["due_tracks"] == 0 and done["analyzers"]["loudness"]["states"] == {"done": 2}
    forced = _plan(str(dataset), "-a", "loudness,spectral", "--force", "loudness", "-j", "1")
    assert forced["missing_rates"] == [] and forced["eta_s"] is not None
    assert forced["analyzers"]["loudness"]["reasons"] == {"forced": 2}
    assert forced["decode_s"] is not None  # the run measured decoding too: every due track once
    expected = forced["analyzers"]["loudness"]["rate_s_per_audio_s"] * 4.0 + forced["decode_s"]
    assert forced["startup_from"] == "local:loudness@cpu,spectral@cpu"  # the run's, which held loudness
    assert abs(forced["eta_s"] - (expected + forced["startup_s"])) <= 0.1
    changed = _plan(str(dataset), "-a", "spectral", "--set", "spectral.rolloff_percent=0.9")
    # the record's readable parameters (when it keeps them) name the parameter that changed
    assert set(changed["analyzers"]["spectral"]["reasons"]) <= {
        "parameter changed: rolloff_percent 0.85 -> 0.9", "parameters changed"}
    assert changed["eta_s"] is None  # other parameters: no rate for them yet

    text = mirflow("plan", str(dataset), "-a", "loudness", "--force", "loudness")
    assert text.returncode == 0 and "ETA" in text.stdout and "2 forced" in text.stdout


def test_progress_lines_without_terminal(dataset: Path) -> None:
    for i in range(2):
        write_track(dataset, f"t{i}", sine(200.0 + 100 * i, 1.0))
    proc = mirflow("run", str(dataset), "-a", "loudness", "-j", "1",
                   env={**os.environ, "MIRFLOW_PROGRESS_INTERVAL": "0"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "plan: 2 track(s) with work due" in lines
    assert any(line.startswith("warming up") for line in lines)
    assert any(line.startswith("progress: 2/2 tracks") for line in lines)
    assert "timing:" in proc.stdout and "x realtime" in proc.stdout


def test_plan_and_run_agree_on_blocked_stems(dataset: Path, _isolated_cache: Path) -> None:
    from mirflow.analyzers.stems import NO_STEMS

    write_track(dataset, "no stems", sine(330.0, 1.0))
    planned = _plan(str(dataset), "-a", "loudness,stems")
    assert planned["due_tracks"] == 1
    assert planned["analyzers"]["stems"]["states"] == {"blocked": 1}
    assert planned["analyzers"]["stems"]["blocked_reasons"] == {NO_STEMS: 1}
    assert all(p["analyzer"] == "loudness" for p in planned["due"])
    text = mirflow("plan", str(dataset), "-a", "loudness,stems").stdout
    assert "stems: 1 track(s) blocked: no stem files" in " ".join(text.split())
    code, summary = run_json(str(dataset), "-a", "loudness,stems", "-j", "1")
    assert code == 0 and summary["analyzers"]["stems"]["blocked"] == 1
    assert summary["analyzers"]["loudness"]["done"] == 1
    assert "no stem files" in sidecar(dataset / "no stems")["_mirflow"]["stems"]["note"]
    write_track(dataset, "new", sine(440.0, 1.0))
    code, alone = run_json(str(dataset), "-a", "stems", "-j", "1")  # nothing to do: no worker
    assert code == 0 and alone["analyzers"]["stems"]["blocked"] == 2 and not alone["timing"]


def test_plan_counts_the_shared_steps_of_what_is_due(dataset: Path) -> None:
    """Spectral computes the shared STFT in a run of both; a plan of tonal alone still counts it
    (tonal reads it), once per track, and a plan of loudness alone does not."""
    write_track(dataset, "a", sine(330.0, 6.0))  # long enough for shared steps of a few ms
    write_track(dataset, "b", sine(220.0, 9.0))
    code, summary = run_json(str(dataset), "-a", "spectral,tonal", "-j", "1")
    assert code == 0
    shared = summary["timing"]["shared"]
    assert {"mono@22050", "stft@22050/2048/512"} <= set(shared)
    assert all(row["tracks"] == 2 for row in shared.values())  # each step once per track

    tonal = _plan(str(dataset), "-a", "tonal", "--force", "all", "-j", "1")
    expected = (tonal["analyzers"]["tonal"]["rate_s_per_audio_s"] * 15.0 + tonal["decode_s"]
                + tonal["shared_s"] + tonal["startup_s"])  # start-up of the default run, a bound
    assert tonal["shared_s"] > 0 and abs(tonal["eta_s"] - expected) <= 0.1
    both = _plan(str(dataset), "-a", "spectral,tonal", "--force", "all", "-j", "1")
    assert both["shared_s"] == tonal["shared_s"]  # read by both, counted once
    code, _ = run_json(str(dataset), "-a", "loudness", "-j", "1")
    assert code == 0
    loud = _plan(str(dataset), "-a", "loudness", "--force", "all", "-j", "1")
    assert loud["shared_s"] == 0.0 and loud["eta_s"] is not None


def test_plan_includes_the_start_up_of_the_same_set_of_analyzers(dataset: Path) -> None:
    write_track(dataset, "a", sine(330.0, 2.0))
    text = mirflow("plan", str(dataset), "-a", "loudness", "--force", "all")
    assert "ETA unknown" in text.stdout  # nothing measured yet
    code, summary = run_json(str(dataset), "-a", "loudness,spectral", "-j", "1")
    assert code == 0 and 0 <= summary["timing"]["startup_s"] < summary["timing"]["first_result_s"]
    same = _plan(str(dataset), "-a", "loudness,spectral", "--force", "all", "-j", "1")
    work = (same["analyzers"]["loudness"]["rate_s_per_audio_s"] * 2.0
            + same["analyzers"]["spectral"]["rate_s_per_audio_s"] * 2.0
            + same["decode_s"] + same["shared_s"])
    assert same["startup_s"] == round(summary["timing"]["startup_s"], 1)
    assert abs(same["eta_s"] - (work + summary["timing"]["startup_s"])) <= 0.1
    assert same["startup_from"] is None  # measured for this very set
    other = _plan(str(dataset), "-a", "loudness", "--force", "all", "-j", "1")
    # never measured alone: the run of a larger set bounds it, and the plan says so
    assert other["startup_s"] == same["startup_s"] and other["startup_from"] == "local:loudness@cpu,spectral@cpu"
    assert abs(other["eta_s"] - (other["analyzers"]["loudness"]["compute_s"] + other["decode_s"]
                                 + other["startup_s"])) <= 0.15
    text = mirflow("plan", str(dataset), "-a", "loudness", "--force", "all")
    assert "as measured for runs of loudness, spectral" in " ".join(text.stdout.split())
    disjoint = _plan(str(dataset), "-a", "tonal", "--force", "all")
    assert disjoint["startup_s"] is None and disjoint["startup_from"] is None


def test_the_coordinator_is_timed_and_its_rate_bounds_the_plan(dataset: Path,
                                                               _isolated_cache: Path) -> None:
    from mirflow.run.rates import RateBook

    for i in range(3):
        write_track(dataset, f"t{i}", sine(200.0 + 50 * i, 0.5))
    code, summary = run_json(str(dataset), "-a", "loudness", "-j", "1")
    coordinator = summary["timing"]["coordinator"]
    assert code == 0 and coordinator["tracks"] == 3
    assert 0 < coordinator["busy_s"] < summary["timing"]["wall_s"]
    assert abs(coordinator["ms_per_track"] - 1000 * coordinator["busy_s"] / 3) < 0.2
    # a coordinator that took a minute a track (a slow network file system, say) bounds the plan
    book = RateBook(_isolated_cache / "mirflow" / "rates.json")
    book.observe_coordinator("local", 60.0 * 8, 8)
    book.save()
    planned = _plan(str(dataset), "-a", "loudness", "--force", "all", "-j", "1")
    per_track = RateBook(_isolated_cache / "mirflow" / "rates.json").coordinator_per_track("local")
    assert planned["coordinator_s"] == round(per_track * 3, 3) and per_track > 15
    assert abs(planned["eta_s"] - (planned["coordinator_s"] + planned["startup_s"])) <= 0.1
    text = mirflow("plan", str(dataset), "-a", "loudness", "--force", "all", "-j", "1")
    assert "the coordinator's leases and sidecar writes take" in " ".join(text.stdout.split())
    serial = _plan(str(dataset), "-a", "loudness", "--force", "all", "--executor", "serial")
    assert serial["coordinator_s"] is None and serial["workers"] == 1  # measured per executor
    assert serial["startup_from"] is None and serial["startup_s"] is None  # no serial run yet


def test_limit_samples_the_dataset_and_gives_the_plan_its_rates(dataset: Path) -> None:
    for i in range(5):
        write_track(dataset, f"t{i}", sine(200.0 + 50 * i, 0.5))
    unknown = mirflow("plan", str(dataset), "-a", "loudness")
    assert "ETA unknown" in unknown.stdout and "--limit 5" in " ".join(unknown.stdout.split())
    code, summary = run_json(str(dataset), "-a", "loudness", "-j", "1", "--limit", "2")
    assert code == 0 and summary["tracks_processed"] == 2 and summary["held_back"] == 3
    assert summary["analyzers"]["loudness"]["done"] == 2
    done = sorted(p.parent.name for p in dataset.glob("*/*.INFO"))
    assert done == ["t1", "t3"]  # the middles of two halves of the sorted tracks, not the first two
    planned = _plan(str(dataset), "-a", "loudness", "-j", "1")
    assert planned["due_tracks"] == 3 and planned["eta_s"] is not None
    text = mirflow("run", str(dataset), "-a", "loudness", "-j", "1", "--limit", "2")
    assert text.returncode == 0 and "--limit: 1 due track(s) left for later runs" in text.stderr
    code, last = run_json(str(dataset), "-a", "loudness", "-j", "1", "--limit", "2")
    assert code == 0 and last["tracks_processed"] == 1 and last["held_back"] == 0
    bad = mirflow("run", str(dataset), "--limit", "0")
    assert bad.returncode == 2 and "--limit" in bad.stderr
