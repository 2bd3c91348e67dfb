"""The local executor's GPU lane, exercised on the CPU (the lane logic does not depend on CUDA)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import probe_calls, sidecar
from mirflow.core.config import RunOptions
from mirflow.run.coordinator import run


def test_gpu_lane_feeds_the_cpu_lane(small_dataset: Path, probe_log: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import mirflow.executors.local as local

    monkeypatch.setattr(local, "accelerator_present", lambda device: True)
    summary = run(small_dataset, RunOptions(analyzers=["probe_gpu", "probe", "stems"], workers=2,
                                            params={"stems": {"analyzers": ["probe"]}}))
    assert summary.failed == 0, summary.failures
    assert summary.counts["probe_gpu"]["done"] == 4 and summary.counts["stems"]["done"] == 4
    gpu_pids = {line.split()[1] for line in probe_calls(probe_log, "analyze-gpu")}
    cpu_pids = {line.split()[1] for line in probe_calls(probe_log)}
    assert len(gpu_pids) == 1 and not gpu_pids & cpu_pids  # one GPU lane process, separate from CPU workers
    assert len(probe_calls(probe_log, "setup-gpu")) == 1
    data = sidecar(small_dataset / "track 0")
    assert data["probe_frames"] > 0 and data["probe_probe_frames"] == data["probe_frames"]
