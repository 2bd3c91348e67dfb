"""Run options: the device is resolved once, here, and only looked up when the run needs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mirflow.core import devices
from mirflow.core.config import Config, validate
from mirflow.core.errors import ConfigError
from mirflow.run.options import build_options


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


def test_the_device_is_resolved_once_for_runs_with_a_gpu_analyzer() -> None:
    options = build_options(Config(), analyzers=["classifiers"])
    assert options.device == str(devices.resolve("auto"))
    assert options.device in {"cpu", "mps"} or options.device.startswith("cuda:")
    assert build_options(Config(), analyzers=["classifiers"], device="cpu").device == "cpu"


def test_devices_this_machine_lacks_are_errors_even_in_cpu_only_runs() -> None:
    with pytest.raises(ConfigError, match="'cuda:7' is not available on this machine; it has: cpu"):
        build_options(Config(), analyzers=["spectral"], device="cuda:7")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        build_options(validate({"run": {"device": "tpu"}}), analyzers=["spectral"])
