"""The command line end to end: run / status / export / config / exit codes / demo."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq

from conftest import mirflow, run_json, sidecar, sine, write_track


def test_run_status_export(small_dataset: Path, tmp_path: Path) -> None:
    (small_dataset / "broken").mkdir()
    (small_dataset / "broken" / "full_mix.ogg").write_bytes(b"OggS but not really" * 4)
    code, summary = run_json(str(small_dataset), "-a", "loudness", "--workers", "2")
    assert code == 1
    counts = summary["analyzers"]["loudness"]
    assert counts["done"] == 4 and counts["failed"] == 1 and summary["tracks"] == 5
    assert set(counts) >= {"done", "skipped", "locked", "failed", "unavailable"}
    assert summary["wall_seconds"] > 0

    # a second run does no analysis work and says so
    code, again = run_json(str(small_dataset), "-a", "loudness")
    assert code == 0 and again["analyzers"]["loudness"]["done"] == 0
    assert again["analyzers"]["loudness"]["skipped"] == 4
    proc = mirflow("run", str(small_dataset), "-a", "loudness")
    assert "nothing to do" in proc.stderr

    st = json.loads(mirflow("status", str(small_dataset), "-a", "loudness", "--json", check=True).stdout)
    assert st["analyzers"]["loudness"] == {"done": 4, "due": 0, "failed": 1, "blocked": 0, "unavailable": 0}
    assert st["failures"][0]["track"] == "broken" and "DecodeError" in st["failures"][0]["error"]
    human = mirflow("status", str(small_dataset), "-a", "loudness", check=True).stdout
    assert "broken" in human and "DecodeError" in human

    out = tmp_path / "table.parquet"
    mirflow("export", str(small_dataset), "-o", str(out), check=True)
    table = pq.read_table(out).to_pylist()
    assert [r["track"] for r in table] == ["broken", "track 0", "track 1", "track 2", "track 3"]
    row = table[1]
    assert row["lufs"] == sidecar(small_dataset / "track 0")["lufs"]
    assert row["path"] == "track 0/full_mix.flac" and table[0]["failed"] == ["loudness"]
    out_csv = tmp_path / "table.csv"
    mirflow("export", str(small_dataset), "-o", str(out_csv), check=True)
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 5 and float(rows[1]["lufs"]) == row["lufs"]


def test_force_and_retry_flags(small_dataset: Path) -> None:
    run_json(str(small_dataset), "-a", "loudness")
    code, forced = run_json(str(small_dataset), "-a", "loudness", "--force", "loudness", "--executor", "serial")
    assert code == 0 and forced["analyzers"]["loudness"]["done"] == 4


def test_usage_and_config_errors_exit_2(small_dataset: Path, tmp_path: Path) -> None:
    proc = mirflow("run", str(small_dataset), "-a", "nonsense")
    assert proc.returncode == 2 and "unknown analyzer 'nonsense'" in proc.stderr
    proc = mirflow("run", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = mirflow("run", str(small_dataset), "--set", "loudness.bogus=1")
    assert proc.returncode == 2 and "bogus" in proc.stderr
    (small_dataset / "mirflow.toml").write_text("[run]\nworkers = -3\n")
    proc = mirflow("run", str(small_dataset))
    assert proc.returncode == 2 and "run.workers" in proc.stderr
    (small_dataset / "mirflow.toml").write_text("[run\n")
    proc = mirflow("run", str(small_dataset))
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr
    proc = mirflow("run", str(small_dataset), "--force", "rhythm_that_is_not_there", "-a", "loudness")
    assert proc.returncode == 2
    proc = mirflow("export", str(small_dataset), "-o", str(tmp_path / "x.xlsx"))
    assert proc.returncode == 2 and ".parquet, .csv or .jsonl" in proc.stderr


def test_config_file_is_used_and_cli_overrides(small_dataset: Path) -> None:
    (small_dataset / "mirflow.toml").write_text('[run]\nanalyzers = ["loudness"]\nexecutor = "serial"\n')
    code, summary = run_json(str(small_dataset))
    assert code == 0 and list(summary["analyzers"]) == ["loudness"]
    assert summary["analyzers"]["loudness"]["done"] == 4


def test_empty_dataset_message(dataset: Path) -> None:
    proc = mirflow("run", str(dataset))
    assert proc.returncode == 0 and "no tracks found" in proc.stderr


def test_stems_features_on_existing_stems(dataset: Path) -> None:
    track = write_track(dataset, "song", sine(220.0, 1.0)).parent
    write_track(dataset, "plain", sine(330.0, 1.0))
    write_track(dataset, "song", sine(110.0, 1.0)).rename(track / "bass.flac")
    write_track(dataset, "song", sine(220.0, 1.0))
    code, summary = run_json(str(dataset), "-a", "loudness,stems", "--stem-analyzers", "loudness")
    assert code == 0
    assert summary["analyzers"]["stems"]["done"] == 1 and summary["analyzers"]["stems"]["blocked"] == 1
    data = sidecar(track)
    assert data["bass_lufs"] < 0 and data["stems_analyzed"] == ["bass"]
    assert "no stem files" in sidecar(dataset / "plain")["_mirflow"]["stems"]["note"]
    code, again = run_json(str(dataset), "-a", "loudness,stems", "--stem-analyzers", "loudness")
    assert again["analyzers"]["stems"]["done"] == 0  # nothing changed: nothing due
    write_track(dataset, "song", sine(440.0, 1.0)).rename(track / "vocals.flac")
    write_track(dataset, "song", sine(220.0, 1.0))
    code, third = run_json(str(dataset), "-a", "loudness,stems", "--stem-analyzers", "loudness")
    assert third["analyzers"]["stems"]["done"] == 1 and "vocals_lufs" in sidecar(track)


def test_analyzers_command_lists_registry() -> None:
    proc = mirflow("analyzers", check=True)
    assert "loudness" in proc.stdout and "lufs" in proc.stdout


def test_the_command_line_skips_the_collectors_pass_at_exit(monkeypatch) -> None:
    """Interpreter shutdown would walk every object the libraries allocated (0.2-0.4 s)."""
    import atexit
    import gc

    from click.testing import CliRunner

    from mirflow.cli import main

    registered = []
    monkeypatch.setattr(atexit, "register", lambda f, *a, **k: registered.append(f) or f)
    monkeypatch.setattr(atexit, "unregister", lambda f: None)
    assert CliRunner().invoke(main, ["analyzers"]).exit_code == 0
    assert gc.freeze in registered
