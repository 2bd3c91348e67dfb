"""Validated configuration: ``mirflow.toml`` plus command-line overrides.

Example ``mirflow.toml`` (looked up as ``--config FILE``, else ``DATASET/mirflow.toml``, else
``./mirflow.toml``)::

    [run]
    analyzers = ["loudness", "spectral", "tonal", "rhythm"]
    workers = 4
    cores = 0                 # CPU cores the local workers share; 0 = one per worker
    executor = "local"        # serial | local | ray
    device = "auto"           # auto | cpu | cuda | cuda:N | rocm | rocm:N | mps
    track_timeout = 0         # seconds per track; 0 = max(600 s, 10 x its duration)
    max_memory = "16G"        # memory budget of the tracks in flight; default 80 % of RAM

    [analyzers.separation]
    model = "htdemucs"
    precision = "bf16"

Unknown keys and wrongly typed values are errors with a message naming the offending key; the
analyzer names and parameters are checked against the registry by :mod:`mirflow.run.options`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_NAME = "mirflow.toml"


@dataclass
class RunOptions:
    """Everything a run needs besides the dataset path (built and validated by
    :func:`mirflow.run.options.build_options` from ``mirflow.toml`` and command-line overrides)."""

    analyzers: list[str]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    executor: str = "local"
    workers: int = 0  # 0 = number of cores (or ``cores`` when given)
    #: CPU cores the local executor's workers share (elastic threads); 0 = one per worker
    cores: int = 0
    #: resolved by build_options: "cpu", "cuda:0", "mps"; as given for status and for the ray
    #: executor (each Ray actor resolves it: the driver's machine may have no GPU)
    device: str = "cpu"
    force: frozenset[str] = frozenset()
    retry_failed: bool = False
    chunk: int = 0  # tracks per work unit; 0 = automatic
    ray_address: str | None = None
    track_timeout: float = 0.0  # seconds per track; 0 = max(600 s, 10 x duration)
    max_memory: float = 0.0  # bytes for the tracks in flight; 0 = 80 % of the machine's memory
    explicit_analyzers: bool = False  # the user named the analyzers: one that cannot run is an error
    #: analyse at most this many of the due tracks, spread evenly over the dataset; 0 = all
    limit: int = 0


class RunSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    analyzers: list[str] | None = None
    workers: int = Field(0, ge=0, description="worker processes; 0 = number of cores")
    cores: int = Field(0, ge=0, description="CPU cores the local workers share; 0 = one per worker")
    executor: Literal["serial", "local", "ray"] = "local"
    device: str = "auto"
    chunk: int = Field(0, ge=0, description="tracks per work unit; 0 = automatic")
    ray_address: str | None = None
    track_timeout: float = Field(0, ge=0, description="seconds per track; 0 = automatic")
    max_memory: str | float | None = Field(None, description="e.g. '16G'; default 80 % of RAM")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: RunSection = RunSection()
    analyzers: dict[str, dict[str, Any]] = {}


def find_config(dataset: Path | None, explicit: Path | None) -> Path | None:
    """The configuration file to use, or ``None``."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return explicit
    for candidate in ([dataset / CONFIG_NAME] if dataset else []) + [Path.cwd() / CONFIG_NAME]:
        if candidate.is_file():
            return candidate
    return None


def load(path: Path | None) -> Config:
    """Read and validate a configuration file (``None`` gives the defaults)."""
    if path is None:
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return validate(raw, source=str(path))


def validate(raw: dict[str, Any], *, source: str = "configuration") -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None
    return cfg


def parse_names(text: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]`` (``None`` stays ``None``)."""
    if text is None:
        return None
    return [n.strip() for n in text.split(",") if n.strip()]


def parse_set(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``--set analyzer.param=value`` pairs; values are parsed as TOML scalars when possible."""
    out: dict[str, dict[str, Any]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        name, dot, param = key.strip().partition(".")
        if not sep or not dot or not name or not param:
            raise ConfigError(f"--set expects ANALYZER.PARAM=VALUE, got {item!r}")
        try:
            parsed = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value.strip()
        out.setdefault(name, {})[param] = parsed
    return out
