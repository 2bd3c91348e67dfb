"""Shared fixtures: synthetic audio written in the dataset layout, and the mirflow CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TESTS = Path(__file__).parent
PLUGINS = TESTS / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))


def sine(freq: float = 440.0, seconds: float = 1.0, sr: int = 44100, *, channels: int = 2,
         dbfs: float = -20.0) -> np.ndarray:
    """A sine at ``dbfs`` peak level in every channel, ``(channels, n)`` float32."""
    t = np.arange(int(round(seconds * sr))) / sr
    y = (10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.tile(y, (channels, 1))


def write_track(root: Path, name: str, samples: np.ndarray, sr: int = 44100, *, ext: str = "flac",
                subtype: str | None = None) -> Path:
    """Write ``samples`` (``(channels, n)``) as ``root/name/full_mix.<ext>``; returns the file."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"full_mix.{ext}"
    arr = np.asarray(samples, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    sf.write(path, arr.T, sr, subtype=subtype)
    return path


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The same for module- and session-scoped fixtures, which run before any function-scoped one
    (``results_fixtures.make_analysed_dataset`` runs mirflow: it recorded its start-ups and rates
    of tiny clips in the developer's real cache, and the real plans then used them)."""
    patch = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("xdg-cache-session")
    patch.setenv("XDG_CACHE_HOME", str(cache))
    yield cache
    patch.undo()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep mirflow's user cache (per-machine rates) out of the real home, here and in CLI children."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """An empty dataset folder."""
    root = tmp_path / "dataset"
    root.mkdir()
    return root


@pytest.fixture
def small_dataset(dataset: Path) -> Path:
    """Four short stereo tracks (0.5-1 s) with different tones."""
    for i in range(4):
        write_track(dataset, f"track {i}", sine(220.0 * (i + 1), 0.5 + 0.15 * i))
    return dataset


@pytest.fixture
def probe_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Enable the probe analyzer plugin for CLI subprocesses; returns its call log."""
    log = tmp_path / "probe.log"
    monkeypatch.setenv("MIRFLOW_PLUGINS", "mirflow_probe")
    monkeypatch.setenv("MIRFLOW_PROBE_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(PLUGINS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    import mirflow_probe  # noqa: F401 - registers the probe in this process too

    return log


def probe_calls(log: Path, kind: str = "analyze") -> list[str]:
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if line.startswith(kind + " ")]


def mirflow(*args: str, check: bool = False, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI (``python -m mirflow``) in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "mirflow", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"mirflow {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_json(*args: str, **kw) -> tuple[int, dict]:
    proc = mirflow("run", *args, "--json", **kw)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON from mirflow run (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def sidecar(track_dir: Path) -> dict:
    return json.loads((track_dir / f"{track_dir.name}.INFO").read_text())
