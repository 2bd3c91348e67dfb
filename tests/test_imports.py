"""Deferred modules run on first use, in place; postponed annotations; what a worker imports."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import write_track
from mirflow.core import imports

PACKAGE_INIT = """
import sys, time
sys._deferred_test_runs.append(__name__)
time.sleep(float({sleep!r}))
if {fail!r}:
    raise RuntimeError("broken package")
VALUE = 42
def __getattr__(name):  # PEP 562 names are answered once the module has run
    if name == "LATE":
        return "late"
    raise AttributeError(name)
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Writes a package ``NAME`` (with a submodule ``sub``) on sys.path; removed afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "_deferred_test_runs", [], raising=False)
    made: list[str] = []

    def make(name: str, *, sleep: float = 0.0, fail: bool = False) -> list[str]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "__init__.py").write_text(PACKAGE_INIT.format(sleep=sleep, fail=fail))
        (folder / "sub.py").write_text("import sys\nsys._deferred_test_runs.append(__name__)\n")
        made.append(name)
        importlib.invalidate_caches()
        return sys._deferred_test_runs

    yield make
    for name in made:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def test_a_deferred_module_runs_on_first_use_in_place(package) -> None:
    runs = package("defpkg_a")
    module = imports.defer("defpkg_a")
    assert module is not None and not imports.imported("defpkg_a")
    exec("import defpkg_a")  # an import statement finds it and does not run it
    assert importlib.import_module("defpkg_a") is module
    assert module.__name__ == "defpkg_a" and module.__spec__.name == "defpkg_a"
    assert inspect.getmodule(test_a_deferred_module_runs_on_first_use_in_place)  # scans sys.modules
    assert runs == [] and not imports.imported("defpkg_a")

    assert module.VALUE == 42  # first use: the code runs, in the same object
    assert runs == ["defpkg_a"] and imports.imported("defpkg_a")
    assert sys.modules["defpkg_a"] is module and type(module) is type(sys)
    assert module.LATE == "late" and runs == ["defpkg_a"]  # once


def test_importing_a_submodule_runs_the_package_first(package) -> None:
    runs = package("defpkg_b")
    imports.defer("defpkg_b")
    exec("import defpkg_b.sub")
    assert runs == ["defpkg_b", "defpkg_b.sub"]
    assert sys.modules["defpkg_b"].sub is sys.modules["defpkg_b.sub"]


def test_a_module_that_fails_is_not_left_half_run(package) -> None:
    runs = package("defpkg_c", fail=True)
    module = imports.defer("defpkg_c")
    with pytest.raises(RuntimeError, match="broken package"):
        module.VALUE
    assert "defpkg_c" not in sys.modules
    with pytest.raises(RuntimeError, match="broken package"):  # as a plain import fails again
        importlib.import_module("defpkg_c")
    assert runs == ["defpkg_c", "defpkg_c"]


def test_threads_wait_for_the_first_run(package) -> None:
    runs = package("defpkg_d", sleep=0.3)
    module = imports.defer("defpkg_d")
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(module.VALUE)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [42] * 4 and runs == ["defpkg_d"]


def test_nothing_to_defer(package) -> None:
    package("defpkg_e")
    first = importlib.import_module("defpkg_e")
    assert imports.defer("defpkg_e") is None and sys.modules["defpkg_e"] is first
    assert imports.defer("no_such_module_anywhere") is None
    assert "no_such_module_anywhere" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("no_such_module_anywhere")


def test_postponed_annotations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    source = "import sys\ndef f(x: sys.no_such_thing) -> int:\n    return x + 1\n"
    for name in ("annmod_plain", "annmod_postponed"):
        (tmp_path / f"{name}.py").write_text(source)
    importlib.invalidate_caches()
    try:
        with pytest.raises(AttributeError):  # evaluated when the function is defined
            importlib.import_module("annmod_plain")
        with imports.postponed_annotations(["annmod_postponed"]):
            module = importlib.import_module("annmod_postponed")
        assert module.f(1) == 2
        assert module.f.__annotations__ == {"x": "sys.no_such_thing", "return": "int"}
        assert not list(tmp_path.glob("__pycache__/annmod_postponed*"))  # no bytecode of ours kept
        assert all(type(f).__name__ != "_PostponedAnnotationsFinder" for f in sys.meta_path)
    finally:
        for name in ("annmod_plain", "annmod_postponed"):
            sys.modules.pop(name, None)


def test_a_run_s_worker_skips_the_command_line_and_the_deferred_scipy_packages(
        tmp_path: Path) -> None:
    """With the ``mirflow`` executable users type, a worker imports neither the command line
    (which multiprocessing's spawn would run again in the child) nor the SciPy packages librosa
    imports and mirflow never calls; the analyses still run (librosa is imported)."""
    script = Path(sys.executable).with_name("mirflow")
    if not script.is_file():
        pytest.skip("no mirflow executable next to this Python")
    from mirflow.core.synth import synth_song

    write_track(tmp_path / "ds", "song", np.atleast_2d(synth_song(bpm=120.0, seconds=8.0, sr=22050,
                                                                   seed=3)), 22050)
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}  # every process reports its imports
    proc = subprocess.run([str(script), "run", str(tmp_path / "ds"), "-a", "tonal,rhythm",
                           "-j", "1", "--json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    assert "librosa.core.convert" in imported and '"done": 1' in proc.stdout
    assert imported.count("mirflow.cli.commands") == 1  # the command's own, not the worker's
    for package in imports.IN_WORKERS:
        assert not [m for m in imported if m.startswith(package + ".")], package


def test_spawn_does_not_run_the_mirflow_script_again(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """What multiprocessing's spawn would tell a child to run first, with the ``mirflow``
    executable as the main module, and with a user's own script (left alone)."""
    import types
    from multiprocessing import spawn

    import mirflow.cli
    from mirflow.executors.process import main_script_hidden

    def main_module(main_func: object) -> types.ModuleType:
        module = types.ModuleType("__main__")
        module.__file__ = str(tmp_path / "mirflow")
        module.__spec__ = None
        module.main = main_func
        return module

    script = main_module(mirflow.cli.main)
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert "init_main_from_path" in spawn.get_preparation_data("w")
    with main_script_hidden():
        assert "init_main_from_path" not in spawn.get_preparation_data("w")
    assert script.__file__ == str(tmp_path / "mirflow")  # put back

    user = main_module(lambda: None)  # a user's script calling the library: spawn as usual
    monkeypatch.setitem(sys.modules, "__main__", user)
    with main_script_hidden():
        assert "init_main_from_path" in spawn.get_preparation_data("w")


PLUGIN = '''
import scipy.signal  # at import, in the worker: deferred, so this costs nothing yet
from scipy.stats import kurtosis  # a name taken at import: the package runs here
from mirflow.analyzers import register
from mirflow.analyzers.base import Analyzer


@register
class UsesScipy(Analyzer):
    name = "uses_scipy"
    outputs = ("butter_b0", "mix_kurtosis")

    def analyze(self, ctx):
        b, _ = scipy.signal.butter(2, 0.25)  # first use: scipy.signal runs now, complete
        return {"butter_b0": float(b[0]), "mix_kurtosis": float(kurtosis(ctx.mono()))}
'''


def test_a_user_analyzer_gets_the_deferred_packages_complete(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from scipy import signal

    from conftest import mirflow, sine

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "uses_scipy.py").write_text(PLUGIN)
    monkeypatch.setenv("MIRFLOW_PLUGINS", "uses_scipy")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    write_track(tmp_path / "ds", "tone", sine(440.0, 1.0))
    mirflow("run", str(tmp_path / "ds"), "-a", "uses_scipy", "-j", "1", check=True)
    result = json.loads((tmp_path / "ds" / "tone" / "tone.INFO").read_text())
    assert result["butter_b0"] == pytest.approx(float(signal.butter(2, 0.25)[0][0]))
    assert result["mix_kurtosis"] == pytest.approx(-1.5, abs=0.01)  # a sine's excess kurtosis
