"""The CLI's one error map: every failure is one line on stderr and a documented exit code.

Most cases run the real command group in-process (click's runner: the same ``main`` the console
script calls); one end-to-end case runs ``python -m mirflow`` in a subprocess.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import mirflow, sine, write_track
from mirflow.cli import errors as cli_errors
from mirflow.cli.commands import main
from mirflow.core import errors


@pytest.fixture
def one_track(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no ./mirflow.toml from the caller's folder
    root = tmp_path / "ds"
    write_track(root, "a", sine(440.0, 0.3, 22050, channels=1), 22050)
    return root


def invoke(*args: str, **kw):
    return CliRunner().invoke(main, list(args), **kw)


def one_line(result) -> str:
    """The single line the CLI printed on stderr (fails if there is more, or a traceback)."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.mark.parametrize("setting, needles", [
    ("spectral.rolloff_percent=abc", ["spectral.rolloff_percent", "'abc'", "a number", "> 0", "< 1"]),
    ("spectral.rolloff_percent=1.5", ["spectral.rolloff_percent", "1.5", "a number", "> 0", "< 1"]),
    ("spectral.silence_db=true", ["spectral.silence_db", "true", "a number", "<= 0"]),
    ("tonal.profile=nope", ["tonal.profile", "'nope'", "krumhansl", "kostka-payne"]),
    ("spectral.bogus=1", ["spectral.bogus", "no such parameter", "rolloff_percent"]),
])
def test_bad_set_values_exit_2_with_one_line(one_track: Path, setting: str, needles: list[str]) -> None:
    result = invoke("run", str(one_track), "-a", "spectral", "--set", setting)
    assert result.exit_code == 2
    line = one_line(result)
    assert line.startswith("error: ")
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize("toml, needles", [
    ('[analyzers.spectral]\nrolloff_percent = "abc"\n', ["spectral.rolloff_percent", "'abc'", "a number"]),
    ("[analyzers.spectral]\nrolloff_percent = 1.5\n", ["spectral.rolloff_percent", "1.5", "< 1"]),
    ("[analyzers.spectral]\nsilence_db = true\n", ["spectral.silence_db", "true", "<= 0"]),
    # an analyzer outside the run is checked too: a typo there is not silently ignored
    ('[analyzers.tonal]\nprofile = "nope"\n', ["tonal.profile", "'nope'", "temperley"]),
    ("[run]\nworkers = -1\n", ["run.workers", "greater than or equal to 0"]),
    ('[run]\ndevice = "tpu"\n', ["'tpu'", "cuda:N", "mps"]),
])
def test_bad_config_file_values_exit_2_with_one_line(one_track: Path, toml: str,
                                                     needles: list[str]) -> None:
    (one_track / "mirflow.toml").write_text(toml)
    result = invoke("run", str(one_track), "-a", "spectral")
    assert result.exit_code == 2
    line = one_line(result)
    for needle in needles:
        assert needle in line, line


def test_device_this_machine_lacks_or_malformed_exits_2(one_track: Path) -> None:
    result = invoke("run", str(one_track), "-a", "spectral", "--device", "cuda:7")
    assert result.exit_code == 2
    line = one_line(result)
    assert "'cuda:7' is not available" in line and "it has: cpu" in line
    result = invoke("run", str(one_track), "-a", "spectral", "--device", "tpu")
    assert result.exit_code == 2
    line = one_line(result)
    assert "unknown device 'tpu'" in line and "cuda:N" in line
    # an analyzer's own device parameter goes through the same resolver
    result = invoke("run", str(one_track), "-a", "classifiers", "--set", "classifiers.device=cuda:7")
    assert result.exit_code == 2
    assert "classifiers.device" in one_line(result)


def test_bad_cores_and_memory_options_exit_2_with_one_line(one_track: Path) -> None:
    for command in ("run", "plan"):
        result = invoke(command, str(one_track), "-a", "loudness", "--max-memory", "2X")
        assert result.exit_code == 2 and "expects a size such as 16G" in one_line(result)
        result = invoke(command, str(one_track), "-a", "loudness", "-j", "3", "--cores", "2")
        assert result.exit_code == 2 and "--cores 2 is fewer than --workers 3" in one_line(result)
    result = invoke("plan", str(one_track), "-a", "loudness", "--max-memory", "1G", "--json")
    assert result.exit_code == 0 and '"workers_before_memory": null' in result.output


def test_corrupt_models_lock_file_exits_2_with_one_line(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "audioset-vggish-3.pb").write_bytes(b"graph")
    (folder / "mirflow-models.lock.json").write_text('{"files": ')
    monkeypatch.setenv("MIRFLOW_MODELS", str(folder))
    result = invoke("models", "verify")
    assert result.exit_code == 2
    line = one_line(result)
    assert "mirflow-models.lock.json is unreadable" in line and "--record" in line


def test_unexpected_errors_are_one_line_and_the_traceback_needs_v(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mirflow.core.dataset as dataset

    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(dataset, "organize", broken)
    (tmp_path / "src").mkdir()
    result = invoke("organize", str(tmp_path / "src"), str(tmp_path / "dest"))
    assert result.exit_code == 1
    assert one_line(result) == ("error: unexpected RuntimeError: disk on fire "
                                "(run with -v for the traceback)")
    verbose = invoke("-v", "organize", str(tmp_path / "src"), str(tmp_path / "dest"))
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr and "disk on fire" in verbose.stderr


def test_interrupt_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mirflow.core.dataset as dataset

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "organize", interrupted)
    (tmp_path / "src").mkdir()
    result = invoke("organize", str(tmp_path / "src"), str(tmp_path / "dest"))
    assert result.exit_code == 130
    assert "run the same command again" in one_line(result)


def test_every_exception_class_has_an_exit_code() -> None:
    """Adding an exception class to core/errors.py means deciding its exit code here."""
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, errors.MirflowError) and c.__module__ == errors.__name__]
    mapped = {cls for cls, _ in cli_errors.EXIT_CODES}
    assert set(classes) <= mapped, set(classes) - mapped
    assert cli_errors.exit_code(errors.ConfigError("x")) == 2
    assert cli_errors.exit_code(errors.SidecarCorrupt("x")) == 2
    assert cli_errors.exit_code(errors.DownloadError("x")) == 1
    assert cli_errors.exit_code(KeyboardInterrupt()) == 130
    assert cli_errors.exit_code(ValueError("x")) == 1


def test_no_module_outside_core_errors_defines_an_exception_class() -> None:
    import ast

    src = Path(errors.__file__).parents[1]
    offenders = []
    for path in src.rglob("*.py"):
        if path == Path(errors.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and any(
                    isinstance(b, (ast.Name, ast.Attribute)) and
                    (getattr(b, "id", None) or getattr(b, "attr", "")).endswith(("Error", "Exception"))
                    for b in node.bases):
                offenders.append(f"{path.relative_to(src)}:{node.lineno} {node.name}")
    assert not offenders, offenders


def test_end_to_end_bad_value_has_no_traceback(one_track: Path) -> None:
    proc = mirflow("run", str(one_track), "-a", "spectral", "--set", "spectral.rolloff_percent=abc")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: spectral.rolloff_percent = 'abc': Input should be a valid number "
        "(allowed: a number, > 0 and < 1)"]
