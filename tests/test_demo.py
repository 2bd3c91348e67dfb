"""`mirflow demo`: the quick-start path works and measures what the tracks were built with."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import mirflow, sidecar
from mirflow.cli.demo import make_demo_dataset


def test_demo_command_end_to_end(tmp_path: Path) -> None:
    dest = tmp_path / "demo"
    proc = mirflow("demo", str(dest), "--tracks", "3", "--seconds", "8", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "known answers vs measured" in proc.stdout
    truths = make_demo_dataset(dest, tracks=3, seconds=8)  # already there: nothing rewritten
    for t in truths:
        data = sidecar(dest / t.name)
        assert data["bpm"] == pytest.approx(t.bpm, rel=0.02)
        assert (data["key"], data["scale"]) == (t.key, t.scale)
        assert data["lufs"] == pytest.approx(t.lufs, abs=0.2)
