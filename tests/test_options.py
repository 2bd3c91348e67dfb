"""Run options: the device is resolved once, here, and only looked up when the run needs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mirflow import analyzers as registry
from mirflow.analyzers.base import Analyzer
from mirflow.core import devices
from mirflow.core.config import Config, validate
from mirflow.core.errors import ConfigError
from mirflow.run.options import build_options


class _GpuProbe(Analyzer):
    """A GPU analyzer whose model is (un)available as the test says; it never runs."""

    name = "gpu-probe"
    version = 1
    device = "gpu"
    outputs = ("x",)
    missing = True

    def unavailable_reason(self) -> str | None:
        return "no model here" if self.missing else None

    def analyze(self, ctx):  # pragma: no cover - never run
        raise AssertionError


def test_a_cpu_only_run_resolves_without_importing_torch() -> None:
    code = ("import sys\n"
            "from mirflow.core.config import Config\n"
            "from mirflow.run.options import build_options\n"
            "for device in (None, 'auto', 'cpu'):\n"
            "    assert build_options(Config(), analyzers=['loudness', 'spectral'], device=device).device == 'cpu'\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_read_only_callers_check_the_spelling_but_never_import_torch() -> None:
    code = ("import sys\n"
            "from mirflow.core.config import Config\n"
            "from mirflow.run.coordinator import build_analyzers\n"
            "from mirflow.run.options import build_options\n"
            "options = build_options(Config(), resolve_device=False)\n"  # every analyzer
            "build_analyzers(options)\n"
            "print(options.device, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "auto False"
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        build_options(Config(), analyzers=["spectral"], device="tpu", resolve_device=False)


def test_the_device_is_resolved_once_for_runs_with_a_gpu_analyzer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._REGISTRY, _GpuProbe.name, _GpuProbe)
    monkeypatch.setattr(_GpuProbe, "missing", False)  # it can run: its device counts
    options = build_options(Config(), analyzers=[_GpuProbe.name])
    assert options.device == str(devices.resolve("auto"))
    assert options.device in {"cpu", "mps"} or options.device.startswith("cuda:")
    assert build_options(Config(), analyzers=[_GpuProbe.name], device="cpu").device == "cpu"


def test_devices_this_machine_lacks_are_errors_even_in_cpu_only_runs() -> None:
    with pytest.raises(ConfigError, match="'cuda:7' is not available on this machine; it has: cpu"):
        build_options(Config(), analyzers=["spectral"], device="cuda:7")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        build_options(validate({"run": {"device": "tpu"}}), analyzers=["spectral"])


@pytest.mark.parametrize("missing", [True, False])
def test_auto_looks_for_an_accelerator_only_for_gpu_analyzers_that_can_run(
        monkeypatch: pytest.MonkeyPatch, missing: bool) -> None:
    monkeypatch.setitem(registry._REGISTRY, _GpuProbe.name, _GpuProbe)
    monkeypatch.setattr(_GpuProbe, "missing", missing)
    monkeypatch.setattr(devices, "accelerator_possible", lambda: True)
    looked: list[bool] = []
    monkeypatch.setattr(devices, "available", lambda: looked.append(True) or (devices.CPU,))
    options = build_options(Config(), analyzers=["loudness", _GpuProbe.name])
    assert options.device == "cpu"
    assert looked == ([] if missing else [True])  # PyTorch is asked only when the analyzer can run


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the device-node check is Linux's")
@pytest.mark.parametrize("node", [False, True])
def test_auto_is_the_cpu_without_pytorch_on_a_linux_machine_with_no_gpu_device_node(
        monkeypatch: pytest.MonkeyPatch, tmp_path, node: bool) -> None:
    present = tmp_path / "nvidiactl"
    if node:
        present.touch()
    monkeypatch.setattr(devices, "ACCELERATOR_NODES", (str(tmp_path / "kfd"), str(present)))
    looked: list[bool] = []
    monkeypatch.setattr(devices, "available", lambda: looked.append(True) or (devices.CPU,))
    assert devices.accelerator_possible() is node
    assert devices.resolve("auto") == devices.CPU
    assert looked == ([True] if node else [])
    with pytest.raises(ConfigError, match="'cuda' is not available"):  # named devices are looked up
        devices.resolve("cuda")
    assert looked[-1:] == [True]


def test_limit_must_be_a_whole_positive_number() -> None:
    from mirflow.core.config import Config
    from mirflow.run.options import build_options

    assert build_options(Config(), analyzers=["loudness"], limit=3).limit == 3
    assert build_options(Config(), analyzers=["loudness"]).limit == 0
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="limit"):
            build_options(Config(), analyzers=["loudness"], limit=bad)


def test_cores_is_the_local_workers_budget_at_least_one_per_worker() -> None:
    assert build_options(Config(), analyzers=["loudness"], workers=1, cores=4).cores == 4
    assert build_options(Config(), analyzers=["loudness"]).cores == 0  # one per worker
    assert build_options(validate({"run": {"cores": 3}}), analyzers=["loudness"]).cores == 3
    with pytest.raises(ConfigError, match="--cores 2 is fewer than --workers 4"):
        build_options(Config(), analyzers=["loudness"], workers=4, cores=2)
    with pytest.raises(ConfigError, match="local executor's core budget; with --executor serial"):
        build_options(Config(), analyzers=["loudness"], executor="serial", cores=2)
    with pytest.raises(ConfigError, match="cores"):
        validate({"run": {"cores": -1}})
    with pytest.raises(ConfigError, match="cores must be"):
        build_options(Config(), analyzers=["loudness"], cores=1.5)
