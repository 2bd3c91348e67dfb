"""The coordinator: planning, resume, force/retry, setup once per worker, sidecar merging."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import probe_calls, sidecar, sine, write_track
from mirflow.core.config import RunOptions
from mirflow.run.coordinator import run, status


def opts(**kw) -> RunOptions:
    base = dict(analyzers=["probe"], executor="serial")
    base.update(kw)
    return RunOptions(**base)


def test_run_then_resume_does_nothing(small_dataset: Path, probe_log: Path) -> None:
    first = run(small_dataset, opts())
    assert first.counts["probe"]["done"] == 4
    assert len(probe_calls(probe_log)) == 4
    second = run(small_dataset, opts())
    assert second.work_done == 0 and second.counts["probe"]["skipped"] == 4
    assert len(probe_calls(probe_log)) == 4
    data = sidecar(small_dataset / "track 0")
    assert data["probe_frames"] == 22050
    rec = data["_mirflow"]["probe"]
    assert rec["status"] == "ok" and rec["version"] == 1 and rec["keys"] == ["probe_frames", "probe_rms"]
    assert data["_mirflow"]["source"]["size"] == (small_dataset / "track 0" / "full_mix.flac").stat().st_size


def test_setup_runs_once_per_worker_not_per_track(small_dataset: Path, probe_log: Path) -> None:
    run(small_dataset, opts(executor="local", workers=2))
    setups = probe_calls(probe_log, "setup")
    analyses = probe_calls(probe_log)
    assert len(analyses) == 4
    worker_pids = {line.split()[1] for line in analyses}
    assert len(setups) == len(worker_pids) <= 2
    assert os.getpid() not in {int(p) for p in worker_pids}  # really in worker processes


def test_force_params_version_and_source_change_make_due(small_dataset: Path, probe_log: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run(small_dataset, opts())
    assert run(small_dataset, opts(force=frozenset({"probe"}))).counts["probe"]["done"] == 4
    assert run(small_dataset, opts(params={"probe": {"sleep": 0.001}})).counts["probe"]["done"] == 4
    from mirflow_probe import Probe

    monkeypatch.setattr(Probe, "version", 2)
    assert run(small_dataset, opts(params={"probe": {"sleep": 0.001}})).counts["probe"]["done"] == 4
    write_track(small_dataset, "track 1", sine(330.0, 0.3))  # the source changed
    again = run(small_dataset, opts(params={"probe": {"sleep": 0.001}}))
    assert again.counts["probe"]["done"] == 1 and again.counts["probe"]["skipped"] == 3


def test_failures_are_recorded_and_retried_only_when_asked(small_dataset: Path, probe_log: Path) -> None:
    failing = {"probe": {"fail_on": "track 2"}}
    s = run(small_dataset, opts(params=failing))
    assert s.counts["probe"]["failed"] == 1 and s.counts["probe"]["done"] == 3
    assert s.failures[0].track == "track 2"
    assert "AnalysisError: probe was told to fail" in s.failures[0].error
    rec = sidecar(small_dataset / "track 2")["_mirflow"]["probe"]
    assert rec["status"] == "error" and "told to fail" in rec["error"]
    again = run(small_dataset, opts(params=failing))
    assert again.work_done == 0 and again.counts["probe"]["previously_failed"] == 1
    st = status(small_dataset, opts(params=failing))
    assert st.counts["probe"]["failed"] == 1 and st.failures[0].track == "track 2"
    retried = run(small_dataset, opts(params=failing, retry_failed=True))
    assert retried.counts["probe"]["failed"] == 1 and retried.counts["probe"]["skipped"] == 3


def test_user_keys_survive_and_corrupt_sidecar_is_kept_aside(small_dataset: Path, probe_log: Path) -> None:
    t0, t1 = small_dataset / "track 0", small_dataset / "track 1"
    (t0 / "track 0.INFO").write_text(json.dumps({"artist": "Somebody", "probe_rms": 123}))
    (t1 / "track 1.INFO").write_text("{not json")
    s = run(small_dataset, opts())
    data = sidecar(t0)
    assert data["artist"] == "Somebody"
    assert data["probe_rms"] != 123  # mirflow's key is replaced by the computed value
    kept = list(t1.glob("track 1.INFO.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == "{not json"
    assert s.quarantined and sidecar(t1)["_mirflow"]["probe"]["status"] == "ok"


def test_decode_failure_is_recorded_with_reason(dataset: Path, probe_log: Path) -> None:
    write_track(dataset, "good", sine())
    bad = dataset / "bad"
    bad.mkdir()
    (bad / "full_mix.wav").write_bytes(b"this is not audio at all" * 10)
    s = run(dataset, opts())
    assert s.counts["probe"]["done"] == 1 and s.counts["probe"]["failed"] == 1
    assert s.failures[0].error.startswith("DecodeError:")


def test_no_temporaries_left_and_stale_ones_cleaned(small_dataset: Path, probe_log: Path) -> None:
    stale = small_dataset / "track 0" / ".mirflow-tmp-drums.flac"
    stale.write_bytes(b"half")
    run(small_dataset, opts())
    assert not list(small_dataset.rglob(".mirflow-tmp-*"))


def test_empty_dataset(dataset: Path, probe_log: Path) -> None:
    s = run(dataset, opts())
    assert s.tracks == 0 and s.work_done == 0


def test_a_limit_samples_evenly_and_keeps_the_rest() -> None:
    from collections import deque

    from mirflow.run.coordinator import sample_evenly

    tracks = deque(range(10))
    kept, held = sample_evenly(tracks, 3)
    assert list(kept) == [1, 5, 8] and held == [0, 2, 3, 4, 6, 7, 9]
    kept, held = sample_evenly(tracks, 1)
    assert list(kept) == [5] and len(held) == 9  # the middle, not the first
    kept, held = sample_evenly(tracks, 10)
    assert list(kept) == list(range(10)) and held == []
    kept, held = sample_evenly(deque(range(7)), 2)
    assert list(kept) == [1, 5] and sorted([*kept, *held]) == list(range(7))
