"""The numba warm-up runs analyzers under a machine-wide lock, one process at a time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from filelock import Timeout

from mirflow.core import jit


def test_warm_up_waits_for_the_lock_holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    calls = []
    jit.warm_up("x", lambda: calls.append(1))
    assert calls == [1] and jit.lock_path() == tmp_path / "mirflow-numba-warmup.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from filelock import FileLock;"
        f"l = FileLock({str(jit.lock_path())!r}); l.acquire(); print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Timeout):
            jit.warm_up("x", lambda: calls.append(2), timeout=0.5)
        assert calls == [1]  # never ran while another process was compiling
    finally:
        holder.kill()
        holder.wait()


def test_rhythm_and_tonal_setup_warm_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mirflow.analyzers.rhythm import RhythmAnalyzer
    from mirflow.analyzers.tonal import TonalAnalyzer

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    seen = []
    monkeypatch.setattr(jit, "warm_up", lambda name, run, **kw: seen.append((name, run())))
    RhythmAnalyzer().setup()
    TonalAnalyzer().setup()
    assert [n for n, _ in seen] == ["rhythm", "tonal"]
    assert seen[0][1]["bpm"] == pytest.approx(120.0, rel=0.02)
    assert seen[1][1]["key"] in ("C", "G")  # 6 s of I-V-vi-IV: C major, or its dominant
