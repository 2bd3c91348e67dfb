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
    assert 1 <= len(probe_calls(probe_log, "setup")) <= 2  # once per actor, not per track
    assert sidecar(small_dataset / "track 0")["_mirflow"]["probe"]["status"] == "ok"


def test_actor_device_is_the_actors_own_gpu() -> None:
    """Ray renumbers an actor's GPU as ``cuda:0``, whatever index the user named."""
    from mirflow.executors.ray import actor_device

    assert actor_device("cuda:1", [1]) == "cuda:0"
    assert actor_device("auto", ["0"]) == "cuda:0"
    assert actor_device("cpu", [0]) == "cpu"


def test_ray_runs_keep_the_device_for_the_actors_to_resolve() -> None:
    """``auto`` on a driver without a GPU must not become ``cpu`` before the cluster is asked."""
    from mirflow.core.config import Config
    from mirflow.run.options import build_options

    ray_opts = build_options(Config(), analyzers=["separation"], executor="ray", device="auto")
    assert ray_opts.device == "auto"
    with pytest.raises(Exception, match="unknown device"):
        build_options(Config(), analyzers=["loudness"], executor="ray", device="tpu:0")
