"""Honest command-line output: logging levels and --log-file without third-party noise, a run
summary that fits 80 columns, one failure line per track, unavailable analyzers explained once,
"nothing to do" exactly when nothing is due, why tracks are due, --save-config, install hints
printed literally, and a demo that refuses someone else's dataset."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import mirflow, sine, write_track


@pytest.fixture
def env80() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "80"}


@pytest.fixture
def tracks(dataset: Path) -> Path:
    for i in range(2):
        write_track(dataset, f"track {i}", sine(220.0 * (i + 1), 1.0))
    (dataset / "broken").mkdir()
    (dataset / "broken" / "full_mix.ogg").write_bytes(b"OggS but not really" * 4)
    return dataset


def test_summary_fits_80_columns_one_failure_line_per_track_then_nothing_to_do(tracks: Path, env80) -> None:
    proc = mirflow("run", str(tracks), "-a", "loudness,spectral,stems", "--executor", "serial", env=env80)
    assert proc.returncode == 1
    table = proc.stdout.splitlines()
    assert table and max(len(line) for line in table) <= 80 and "…" not in proc.stdout
    assert "n/a" in proc.stdout and "s/track" in proc.stdout
    failed = [line for line in proc.stderr.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1 and failed[0].startswith("failed broken: DecodeError")
    assert failed[0].endswith("[loudness, spectral]")  # both analyzers named on the one line
    # a second run: the stems analyzer is blocked on every track (no stems), which is not work
    again = mirflow("run", str(tracks), "-a", "loudness,spectral,stems", "--executor", "serial", env=env80)
    assert "nothing to do" in again.stderr and again.returncode == 0
    assert "failed broken" not in again.stderr  # earlier failures are in `status`, not repeated


def test_verbosity_levels_log_file_and_no_third_party_noise(tracks: Path, tmp_path: Path) -> None:
    quiet = mirflow("run", str(tracks), "-a", "loudness", "--executor", "serial")
    assert "DEBUG" not in quiet.stderr and "INFO" not in quiet.stderr
    log_file = tmp_path / "logs" / "mirflow.log"
    loud = mirflow("-vv", "--log-file", str(log_file), "run", str(tracks), "-a", "rhythm",
                   "-j", "1", "--force", "rhythm")  # a worker process: it logs with the same setup
    lines = loud.stderr.splitlines()
    assert any(line.startswith("INFO mirflow.cli.commands: plan: 3 tracks, 3 with work due") for line in lines)
    assert any(line.startswith("DEBUG mirflow.cli.commands: track track 0 done") for line in lines)
    noisy = [line for line in lines if re.match(r"(DEBUG|INFO) (?!mirflow)", line)]
    assert noisy == [] and len(lines) < 200  # numba alone used to print tens of thousands
    text = log_file.read_text()
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \d+ DEBUG mirflow\.", text, re.M)
    assert "numba" not in text.replace("mirflow.core.jit", "").replace("numba warm-up", "").replace("numba cache", "")
    pids = {m.group(1) for m in re.finditer(r"^\S+ \S+ (\d+) DEBUG mirflow\.core\.jit", text, re.M)}
    cli_pid = re.search(r"^\S+ \S+ (\d+) INFO mirflow\.cli\.commands: plan", text, re.M).group(1)
    assert pids and cli_pid not in pids  # the worker's own messages reached the file
    # -v: info, no debug; the log file still gets debug
    log_file.unlink()
    info = mirflow("-v", "--log-file", str(log_file), "run", str(tracks), "-a", "loudness",
                   "--executor", "serial", "--force", "loudness")
    assert "INFO mirflow" in info.stderr and "DEBUG" not in info.stderr
    assert "DEBUG mirflow.cli.commands: track" in log_file.read_text()


HINT_PLUGIN = '''
from typing import ClassVar
from mirflow.analyzers import register
from mirflow.analyzers.base import Analyzer

@register
class NeedsRay(Analyzer):
    name: ClassVar[str] = "needsray"
    def unavailable_reason(self):
        return "install it with pip install 'mirflow[ray]' (see [docs])"
    def analyze(self, ctx):
        return {}
'''


def test_unavailable_explained_once_with_hints_printed_literally(tracks: Path, tmp_path: Path) -> None:
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "mirflow_needsray.py").write_text(HINT_PLUGIN)
    env = {**os.environ, "MIRFLOW_PLUGINS": "mirflow_needsray", "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "plug"), os.environ.get("PYTHONPATH", "")])}
    named = mirflow("run", str(tracks), "-a", "loudness,needsray", "--executor", "serial", env=env)
    assert named.stderr.count("pip install 'mirflow[ray]' (see [docs])") == 1
    st = mirflow("status", str(tracks), "-a", "loudness,needsray", env=env)
    assert "pip install 'mirflow[ray]' (see [docs])" in st.stdout
    # not named (the default "all"): one short line, no instructions repeated on every run
    default = mirflow("status", str(tracks), env=env)
    assert "pip install" not in default.stdout
    line, = [x for x in default.stdout.splitlines() if x.startswith("not available here:")]
    assert "needsray" in line and "mirflow analyzers" in line


def test_status_says_why_due_and_save_config_keeps_parameters(tracks: Path) -> None:
    mirflow("run", str(tracks), "-a", "tonal", "--executor", "serial")
    proc = mirflow("run", str(tracks), "-a", "tonal", "--executor", "serial", "--set", "tonal.profile=temperley",
                   env={**os.environ, "COLUMNS": "300"})
    assert "a plain `mirflow run` will recompute tonal with profile='kostka-payne'" in proc.stderr
    st = mirflow("status", str(tracks), "-a", "tonal", env={**os.environ, "COLUMNS": "300"}).stdout
    assert "due 3 track(s) [tonal]: parameter changed: profile temperley -> kostka-payne" in st
    saved = mirflow("run", str(tracks), "-a", "tonal", "--executor", "serial", "--set", "tonal.profile=temperley",
                    "--save-config")
    assert "saved tonal.profile" in saved.stderr and "nothing to do" in saved.stderr
    assert 'profile = "temperley"' in (tracks / "mirflow.toml").read_text()
    plain = mirflow("run", str(tracks), "-a", "tonal", "--executor", "serial")
    assert "nothing to do" in plain.stderr and "warning" not in plain.stderr


def test_save_config_keeps_comments(tracks: Path) -> None:
    (tracks / "mirflow.toml").write_text('# my settings\n[run]\nworkers = 1  # small machine\n')
    mirflow("run", str(tracks), "-a", "loudness", "--set", "tonal.profile=krumhansl", "--save-config",
            check=False)
    text = (tracks / "mirflow.toml").read_text()
    assert "# my settings" in text and "# small machine" in text
    assert "[analyzers.tonal]" in text and 'profile = "krumhansl"' in text


def test_demo_refuses_a_folder_with_other_tracks(tracks: Path) -> None:
    proc = mirflow("demo", str(tracks), "--tracks", "1", "--seconds", "4")
    assert proc.returncode == 2 and "did not make" in proc.stderr
    assert not (tracks / "demo01").exists()
