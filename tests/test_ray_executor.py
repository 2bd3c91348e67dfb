"""The Ray executor on a local Ray instance (skipped when Ray is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import probe_calls, sidecar
from mirflow.core.config import RunOptions
from mirflow.run.coordinator import run

pytest.importorskip("ray")


def test_ray_executor_runs_every_track_once(small_dataset: Path, probe_log: Path) -> None:
    summary = run(small_dataset, RunOptions(analyzers=["probe"], executor="ray", workers=2))
    assert summary.counts["probe"]["done"] == 4
    assert len(probe_calls(probe_log)) == 4
    assert len(probe_calls(probe_log, "setup")) <= 2
    assert sidecar(small_dataset / "track 0")["_mirflow"]["probe"]["status"] == "ok"
