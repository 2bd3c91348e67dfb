"""The Python API: mirflow.analyze on a file or an array (same values as a run's sidecar, analyzers
set up once per process), mirflow.run / load / status, errors, and a light `import mirflow`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mirflow
from conftest import sidecar, write_track
from results_fixtures import SR, click_song


def test_public_names() -> None:
    assert set(mirflow.__all__) >= {"analyze", "run", "load", "export", "report", "status",
                                    "RunSummary", "MirflowError", "__version__"}
    for name in mirflow.__all__:
        assert getattr(mirflow, name) is not None
    assert callable(mirflow.run)  # the function, not the mirflow.run subpackage
    from mirflow.run import coordinator  # the subpackage is still importable

    assert mirflow.RunSummary is coordinator.RunSummary


def test_import_is_light() -> None:
    code = ("import sys, mirflow; heavy = {'numpy', 'pandas', 'pyarrow', 'librosa', 'rich', 'click', "
            "'scipy', 'torch', 'typing'}; print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("[]", "['typing']")  # some interpreters import typing at start


def test_analyze_file_matches_a_run_and_reuses_analyzers(dataset: Path) -> None:
    from mirflow import api

    song = click_song(120.0, 6.0)
    mix = write_track(dataset, "song", song, SR)
    summary = mirflow.run(dataset, analyzers=["loudness", "rhythm"], executor="serial")
    assert isinstance(summary, mirflow.RunSummary) and summary.counts["rhythm"]["done"] == 1
    data = sidecar(dataset / "song")
    got = mirflow.analyze(mix, analyzers=["loudness", "rhythm"])
    assert got["duration_s"] == pytest.approx(6.0) and got["sample_rate"] == SR and got["channels"] == 2
    for key in ("lufs", "lra", "true_peak_dbtp", "bpm", "beat_count"):
        assert got[key] == data[key], key
    assert got["bpm"] == pytest.approx(120.0, rel=0.02)
    # an array: the same numbers (the file is float32 FLAC 24-bit, so compare loosely)
    arr = mirflow.analyze(song, sr=SR, analyzers=["loudness", "rhythm"])
    assert arr["lufs"] == pytest.approx(got["lufs"], abs=0.01) and arr["bpm"] == pytest.approx(got["bpm"], abs=0.5)
    mono = mirflow.analyze(song[0], sr=SR, analyzers=["loudness"])
    assert mono["channels"] == 1
    # analyzers are built and set up once per process and configuration, then reused
    workers = [w for w in api._workers.values() if w.order == ["loudness", "rhythm"]]
    assert len(workers) == 1 and workers[0].setup_count == {"loudness": 1, "rhythm": 1}
    mirflow.close()
    assert api._workers == {}


def test_analyze_params_and_errors(tmp_path: Path) -> None:
    y = click_song(100.0, 4.0)[0]
    a = mirflow.analyze(y, sr=SR, analyzers=["tonal"], params={"tonal": {"profile": "temperley"}})
    assert a["key"] in {"C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"}
    with pytest.raises(mirflow.ConfigError, match="sr="):
        mirflow.analyze(y, analyzers=["loudness"])
    with pytest.raises(mirflow.ConfigError, match="track folders"):
        mirflow.analyze(y, sr=SR, analyzers=["separation"])
    with pytest.raises(mirflow.ConfigError, match="profile"):
        mirflow.analyze(y, sr=SR, analyzers=["tonal"], params={"tonal": {"profile": "nope"}})
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense" * 10)
    with pytest.raises(mirflow.DecodeError):
        mirflow.analyze(bad, analyzers=["loudness"])
    silent = mirflow.analyze(np.zeros(SR, np.float32), sr=SR, analyzers=["loudness"])
    assert silent["lufs"] is None  # silence: null with a note, not -inf


def test_load_tracks_and_stems(tmp_path: Path) -> None:
    from results_fixtures import make_analysed_dataset

    root = make_analysed_dataset(tmp_path / "ds")
    df = mirflow.load(root)
    assert list(df["track"]) == ["a/song one", "broken", "song two", "with stems"]
    assert df["lufs"].dtype == "float64" and df.attrs["mirflow"]["dataset_root"] == str(root.resolve())
    stems = mirflow.load(root, stems=True)
    assert list(stems.columns[:3]) == ["track", "stem", "path"] and len(stems) == 2
    assert stems.set_index("stem").loc["drums", "lufs"] == sidecar(root / "with stems")["drums_lufs"]
    out = tmp_path / "t.parquet"
    assert mirflow.export(root, out) == 4
    again = mirflow.load(out)
    assert list(again["track"]) == list(df["track"]) and again.attrs["mirflow"]["table"] == "tracks"
    st = mirflow.status(root, analyzers=["loudness"])
    assert st.counts["loudness"]["done"] == 3 and st.counts["loudness"]["failed"] == 1
    with pytest.raises(mirflow.DatasetError):
        mirflow.load(tmp_path / "missing")
