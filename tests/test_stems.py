"""Per-stem features get the user's parameters of the analyzers they run, and say which."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_json, sidecar, sine, write_track
from mirflow.analyzers.stems import StemsAnalyzer
from mirflow.core.config import Config, validate
from mirflow.core.errors import ConfigError
from mirflow.run.options import build_options


def test_the_runs_parameters_reach_the_per_stem_analyzers() -> None:
    default = build_options(Config(), analyzers=["stems"])
    tuned = build_options(Config(), analyzers=["stems"],
                          params={"spectral": {"rolloff_percent": 0.5}})
    assert tuned.params["stems"]["params"] == {"spectral": {"rolloff_percent": 0.5}}
    stems = StemsAnalyzer(**tuned.params["stems"])
    assert stems._subs["spectral"].params["rolloff_percent"] == 0.5
    # the stems record changes with them, so the stems are analysed again
    assert stems.params_hash() != StemsAnalyzer(**default.params.get("stems", {})).params_hash()
    assert stems.hashed_params()["spectral"]["parameters"]["rolloff_percent"] == 0.5
    # mirflow.toml works the same way; an explicit stems.params value wins over the run's
    cfg = validate({"analyzers": {"spectral": {"rolloff_percent": 0.5},
                                  "stems": {"params": {"spectral": {"rolloff_percent": 0.7}}}}})
    assert build_options(cfg, analyzers=["stems"]).params["stems"]["params"]["spectral"] == \
        {"rolloff_percent": 0.7}


def test_bad_per_stem_parameters_are_configuration_errors() -> None:
    with pytest.raises(ConfigError, match=r"spectral\.rolloff_percent = 1\.5"):
        build_options(Config(), analyzers=["stems"], params={"spectral": {"rolloff_percent": 1.5}})
    with pytest.raises(ConfigError, match="not in stems.analyzers"):
        StemsAnalyzer(analyzers=["loudness"], params={"spectral": {"rolloff_percent": 0.5}})


def test_stems_run_with_the_users_parameters_end_to_end(dataset: Path) -> None:
    track = write_track(dataset, "song", sine(220.0, 1.0)).parent
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal((1, 44100))).astype(np.float32)
    write_track(dataset, "song", noise).rename(track / "drums.flac")
    write_track(dataset, "song", sine(220.0, 1.0))
    args = (str(dataset), "-a", "spectral,stems", "--stem-analyzers", "spectral")
    code, first = run_json(*args)
    assert code == 0 and first["analyzers"]["stems"]["done"] == 1
    default_rolloff = sidecar(track)["drums_spectral_rolloff_mean"]
    code, second = run_json(*args, "--set", "spectral.rolloff_percent=0.5")
    assert code == 0
    # the new value is due again for the mix's spectral features and for the stems' ones
    assert second["analyzers"]["stems"]["done"] == 1 and second["analyzers"]["spectral"]["done"] == 1
    data = sidecar(track)
    # white noise: the 50 % rolloff lies far below the 85 % one (about half of 85 % of Nyquist)
    assert data["drums_spectral_rolloff_mean"] < 0.75 * default_rolloff
    record = data["_mirflow"]["stems"]
    assert record["parameters"]["spectral"]["parameters"]["rolloff_percent"] == 0.5
    assert data["_mirflow"]["spectral"]["parameters"]["rolloff_percent"] == 0.5
