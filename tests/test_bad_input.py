"""Every kind of bad or unusual input through the real CLI: analysed correctly or failed with a reason,
and the run goes on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import sidecar, sine, write_track


def _build(root: Path) -> dict[str, str]:
    """Write the zoo of inputs; returns {track folder: expected outcome ('ok' | 'error')}."""
    expect = {}
    (root / "empty").mkdir()
    (root / "empty" / "full_mix.wav").write_bytes(b"")
    expect["empty"] = "error"
    (root / "not audio").mkdir()
    (root / "not audio" / "full_mix.mp3").write_bytes(b"<html>definitely not an mp3</html>\n" * 20)
    expect["not audio"] = "error"
    trunc = write_track(root, "truncated", sine(seconds=3.0), ext="wav")
    trunc.write_bytes(trunc.read_bytes()[:30])  # header cut short
    expect["truncated"] = "error"
    write_track(root, "one sample", np.array([[0.25], [0.25]], np.float32), ext="wav")
    expect["one sample"] = "ok"
    write_track(root, "silence", np.zeros((2, 44100), np.float32))
    expect["silence"] = "ok"
    write_track(root, "six channels", np.tile(sine(seconds=1.0, channels=1), (6, 1)), 48000, ext="wav")
    expect["six channels"] = "ok"
    write_track(root, "8k mono", sine(300.0, 1.0, 8000, channels=1), 8000, ext="wav")
    expect["8k mono"] = "ok"
    write_track(root, "192k float", sine(1000.0, 1.0, 192000), 192000, ext="wav", subtype="FLOAT")
    expect["192k float"] = "ok"
    nan = sine(seconds=1.0)
    nan[:, 100:200] = np.nan
    write_track(root, "nan samples", nan, ext="wav", subtype="FLOAT")
    expect["nan samples"] = "ok"
    write_track(root, "Ünïcødé ñame 日本 \"quoted\" 'single'", sine(seconds=1.0))
    expect["Ünïcødé ñame 日本 \"quoted\" 'single'"] = "ok"
    locked = write_track(root, "unreadable", sine(seconds=1.0))
    locked.chmod(0)
    expect["unreadable"] = "error"
    return expect


def _unprivileged_prefix() -> list[str]:
    """When we are root, drop the capabilities that bypass file permissions (so they apply)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def test_bad_and_unusual_inputs(tmp_path: Path) -> None:
    root = tmp_path / "zoo"
    root.mkdir()
    expect = _build(root)
    proc = subprocess.run([*_unprivileged_prefix(), sys.executable, "-m", "mirflow", "run", str(root),
                           "-a", "loudness", "--workers", "2", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # some tracks failed, the run finished
    summary = json.loads(proc.stdout)
    failed = {f["track"]: f["error"] for f in summary["failures"]}
    assert set(failed) == {k for k, v in expect.items() if v == "error"}, failed
    assert "empty" in failed["empty"]
    assert "permission denied" in failed["unreadable"]
    assert all(e.startswith("DecodeError:") for e in failed.values())
    for name, outcome in expect.items():
        rec = sidecar(root / name)["_mirflow"]["loudness"]
        assert rec["status"] == outcome, (name, rec)
    silent = sidecar(root / "silence")
    assert silent["lufs"] is None and silent["_mirflow"]["loudness"]["note"]
    nan = sidecar(root / "nan samples")
    assert nan["lufs"] is not None and "non-finite" in nan["_mirflow"]["loudness"]["warnings"][0]
    assert sidecar(root / "8k mono")["lufs"] == pytest.approx(-20 - 3.01 - 0.69, abs=0.5)  # 300 Hz mono
    for name in ("six channels", "192k float"):
        assert isinstance(sidecar(root / name)["lufs"], float)
    assert sidecar(root / "one sample")["peak_dbfs"] == pytest.approx(-12.04, abs=0.01)
    # sources untouched, nothing temporary left
    assert not list(root.rglob(".mirflow-tmp-*"))
    assert (root / "empty" / "full_mix.wav").stat().st_size == 0
