"""Per-machine rates: location (XDG), blending, atomic merged saves, robustness."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mirflow.run import rates as ratesmod
from mirflow.run.rates import RateBook


def test_cache_dir_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ratesmod.default_path() == tmp_path / "xdg" / "mirflow" / "rates.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ratesmod.default_path() == tmp_path / "home" / ".cache" / "mirflow" / "rates.json"


def test_unknown_until_observed_then_blended(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    book = RateBook(path)
    assert book.get("loudness", "cpu", "abc") is None
    book.observe("loudness", "cpu", "abc", compute_s=2.0, audio_s=100.0, tracks=4)
    book.save()
    again = RateBook(path)
    rate = again.get("loudness", "cpu", "abc")
    assert rate is not None and rate.per_audio_second == pytest.approx(0.02)
    assert rate.tracks == 4
    # other params, device or machine: no rate
    assert again.get("loudness", "cpu", "other") is None
    assert again.get("loudness", "cuda:X", "abc") is None
    assert RateBook(path, machine_id="another-machine").get("loudness", "cpu", "abc") is None
    # a second run blends: history halved, new measurement added
    again.observe("loudness", "cpu", "abc", compute_s=4.0, audio_s=100.0, tracks=4)
    again.save()
    blended = RateBook(path).get("loudness", "cpu", "abc")
    assert blended.per_audio_second == pytest.approx((0.5 * 2.0 + 4.0) / (0.5 * 100 + 100))
    assert blended.tracks == 8


def test_saves_merge_with_other_runs(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    a, b = RateBook(path), RateBook(path)  # two runs that started at the same time
    a.observe("tonal", "cpu", "h1", compute_s=1.0, audio_s=10.0, tracks=1)
    b.observe("rhythm", "cpu", "h2", compute_s=3.0, audio_s=10.0, tracks=1)
    a.save()
    b.save()
    book = RateBook(path)
    assert book.get("tonal", "cpu", "h1") and book.get("rhythm", "cpu", "h2")
    assert not list(tmp_path.glob("*.part"))  # atomic write left no temporary behind


def test_corrupt_or_foreign_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    path.write_text("{not json")
    book = RateBook(path)
    assert book.get("loudness", "cpu", "x") is None
    book.observe("loudness", "cpu", "x", compute_s=1.0, audio_s=50.0, tracks=1)
    book.save()
    assert json.loads(path.read_text())["format"] == ratesmod.FORMAT
    assert RateBook(path).get("loudness", "cpu", "x") is not None


def test_unwritable_cache_does_not_raise(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    book = RateBook(blocker / "sub" / "rates.json")  # parent is a file: cannot be created
    book.observe("loudness", "cpu", "x", compute_s=1.0, audio_s=5.0, tracks=1)
    book.save()  # logged, not raised


def test_zero_audio_is_not_a_rate(tmp_path: Path) -> None:
    book = RateBook(tmp_path / "r.json")
    book.observe("loudness", "cpu", "x", compute_s=1.0, audio_s=0.0, tracks=1)
    book.save()
    assert not (tmp_path / "r.json").exists()


def test_rates_of_the_first_format_are_not_read(tmp_path: Path) -> None:
    """Format 1 counted decoding the mix in the first analyzer's rate: those rates are dropped."""
    path = tmp_path / "rates.json"
    book = RateBook(path)
    book.observe("loudness", "cpu", "x", compute_s=1.0, audio_s=50.0, tracks=1)
    book.save()
    data = json.loads(path.read_text())
    assert RateBook(path).get("loudness", "cpu", "x") is not None
    path.write_text(json.dumps({**data, "format": 1}))
    assert RateBook(path).get("loudness", "cpu", "x") is None
    path.write_text(json.dumps({**data, "format": 2}))  # shared steps in the first reader's rate
    assert RateBook(path).get("loudness", "cpu", "x") is None


def test_startup_is_the_median_of_the_last_runs_per_set_of_analyzers(tmp_path: Path) -> None:
    from mirflow.run.rates import STARTUP_KEEP, startup_key

    path = tmp_path / "rates.json"
    key = startup_key({"tonal": "cpu", "loudness": "cpu"})
    assert key == "local:loudness@cpu,tonal@cpu" and RateBook(path).startup(key) is None
    for seconds in (15.0, 1.9, 2.1):  # a cold first run (numba compiling), then warm ones
        book = RateBook(path)
        book.observe_startup(key, seconds)
        book.save()
    assert RateBook(path).startup(key) == pytest.approx(2.1)  # the cold run does not skew it
    assert RateBook(path).startup(startup_key({"tonal": "cpu"})) is None  # another set
    other = RateBook(path)  # another run saving meanwhile: merged, the last values kept
    for seconds in (2.0, 2.2, 2.4, 2.6):
        other.observe_startup(key, seconds)
    other.save()
    data = json.loads(path.read_text())
    kept = next(iter(data["machines"].values()))["startup"][key]
    assert kept == [2.1, 2.0, 2.2, 2.4, 2.6] and len(kept) == STARTUP_KEEP
    next(iter(data["machines"].values()))["startup"][key] = ["x", 3.0]  # hand-edited: skipped
    path.write_text(json.dumps(data))
    assert RateBook(path).startup(key) is None  # unreadable list: no estimate, no crash


def test_a_set_never_measured_takes_the_start_up_of_the_closest_measured_set(tmp_path: Path) -> None:
    from mirflow.run.rates import startup_analyzers, startup_key

    path = tmp_path / "rates.json"
    book = RateBook(path)
    runs = {("loudness",): 0.8, ("loudness", "spectral"): 0.9, ("loudness", "rhythm", "spectral"): 1.6,
            ("loudness", "rhythm", "spectral", "tonal"): 1.9, ("tonal",): 1.5}
    for names, seconds in runs.items():
        book.observe_startup(startup_key(dict.fromkeys(names, "cpu")), seconds)
    book.save()
    book = RateBook(path)
    cpu = lambda *names: dict.fromkeys(names, "cpu")  # noqa: E731
    assert book.startup_estimate(cpu("loudness")) == (0.8, None)  # measured for itself
    # the smallest measured set holding it: an upper bound
    assert book.startup_estimate(cpu("rhythm")) == (1.6, "local:loudness@cpu,rhythm@cpu,spectral@cpu")
    # held by none: the largest measured set it holds (ties: the larger start-up)
    assert book.startup_estimate(cpu("loudness", "spectral", "tonal", "rhythm", "stems")) == \
        (1.9, "local:loudness@cpu,rhythm@cpu,spectral@cpu,tonal@cpu")
    assert book.startup_estimate(cpu("tonal", "spectral")) == \
        (1.9, "local:loudness@cpu,rhythm@cpu,spectral@cpu,tonal@cpu")
    # another device is another analyzer: separation on a GPU starts differently
    assert book.startup_estimate({"separation": "cuda"}) == (None, None)
    assert book.startup_estimate({}) == (None, None)
    # another executor is another start-up: a warm in-process (serial) run starts in no time
    assert book.startup_estimate(cpu("loudness"), "serial") == (None, None)
    book.observe_startup(startup_key(cpu("loudness", "tonal"), "serial"), 0.05)
    book.save()
    book = RateBook(path)
    assert book.startup_estimate(cpu("loudness"), "serial") == (0.05, "serial:loudness@cpu,tonal@cpu")
    assert book.startup_estimate(cpu("loudness", "tonal")) == \
        (1.9, "local:loudness@cpu,rhythm@cpu,spectral@cpu,tonal@cpu")  # not the serial one
    assert startup_analyzers("local:loudness@cpu,tonal@cpu") == ["loudness", "tonal"]


@pytest.fixture(scope="module")
def cache_home_of_a_module_fixture() -> str | None:
    return os.environ.get("XDG_CACHE_HOME")


def test_fixtures_of_every_scope_keep_rates_out_of_the_real_cache(
        cache_home_of_a_module_fixture: str | None, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A module-scoped fixture that runs mirflow must not write the developer's real rates file."""
    assert cache_home_of_a_module_fixture is not None
    assert Path(cache_home_of_a_module_fixture).is_relative_to(tmp_path_factory.getbasetemp())


def test_the_coordinator_is_rated_per_track_and_per_executor(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    book = RateBook(path)
    assert book.coordinator_per_track("local") is None
    book.observe_coordinator("local", 6.0, 2000)
    book.observe_coordinator("local", 1.0, 0)  # no track: nothing to rate
    book.save()
    again = RateBook(path)
    assert again.coordinator_per_track("local") == pytest.approx(0.003)
    assert again.coordinator_per_track("ray") is None
    again.observe_coordinator("local", 1.0, 1000)
    again.save()
    blended = RateBook(path).coordinator_per_track("local")
    assert blended == pytest.approx((0.5 * 6.0 + 1.0) / (0.5 * 2000 + 1000))


def _fit(pairs: list[tuple[float, float]]) -> ratesmod.Fit:
    fit = ratesmod.Fit()
    for duration, seconds in pairs:
        fit = fit.add(duration, seconds)
    return fit


def test_a_part_per_track_is_fitted_once_durations_differ() -> None:
    from mirflow.run.rates import Fit, Rate

    # compute = 0.5 s per track + 0.01 s per audio second, exactly
    tracks = [(d, 0.5 + 0.01 * d) for d in (10.0, 30.0, 60.0, 200.0)]
    fit = _fit(tracks)
    per_track, per_second = fit.line()
    assert per_track == pytest.approx(0.5) and per_second == pytest.approx(0.01)
    rate = Rate(sum(c for _, c in tracks), sum(d for d, _ in tracks), len(tracks), fit=fit)
    assert rate.seconds(100.0) == pytest.approx(1.5)
    assert rate.seconds(5.0) == pytest.approx(0.55)
    # the ratio alone: 5.0 s over 300 s of audio, 1.67 s for 100 s (the line: 1.5 s)
    assert Rate(rate.compute_s, rate.audio_s).seconds(100.0) == pytest.approx(100 * 5.0 / 300)
    # alike durations cannot tell the parts apart: the ratio
    alike = _fit([(30.0, 0.8), (31.0, 0.81), (29.0, 0.79)])
    assert alike.line() is None
    assert Rate(2.4, 90.0, 3, fit=alike).seconds(60.0) == pytest.approx(60 * 2.4 / 90)
    # one track, or a fit that is no cost (longer tracks cheaper, or a negative part per track)
    assert _fit([(10.0, 1.0)]).line() is None
    assert _fit([(10.0, 2.0), (100.0, 1.0)]).line() is None
    assert _fit([(10.0, 0.01), (100.0, 2.0)]).line() is None
    assert Fit.from_list("junk") == Fit() and Fit.from_list([1, 2, 3]) == Fit()
    assert Fit.from_list([1, -2, 3, 4, 5]) == Fit()


def test_the_fit_is_saved_and_blended_like_the_rate(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    book = RateBook(path)
    clips = _fit([(10.0, 0.6), (10.0, 0.6)])  # a run of clips: 0.06 s per audio second
    book.observe("rhythm", "cpu", "h", compute_s=1.2, audio_s=20.0, tracks=2, fit=clips)
    book.save()
    rate = RateBook(path).get("rhythm", "cpu", "h")
    assert rate.fit.as_list() == clips.as_list() and rate.fit.line() is None
    assert rate.seconds(200.0) == pytest.approx(12.0)  # the clips' ratio: too much for 200 s
    # a run of full-length tracks: the line through both runs finds the part per track
    longer = _fit([(200.0, 2.5), (240.0, 2.9)])
    again = RateBook(path)
    again.observe("rhythm", "cpu", "h", compute_s=5.4, audio_s=440.0, tracks=2, fit=longer)
    again.save()
    blended = RateBook(path).get("rhythm", "cpu", "h")
    assert blended.fit.as_list() == longer.plus(clips, weight=ratesmod.DECAY).as_list()
    per_track, per_second = blended.fit.line()
    assert per_track == pytest.approx(0.5, abs=0.01) and per_second == pytest.approx(0.01, rel=0.02)
    assert blended.seconds(200.0) == pytest.approx(2.5, rel=0.02)
    assert blended.seconds(10.0) == pytest.approx(0.6, rel=0.05)
    # a rates file written before fits were kept is read, and the next run starts the sums
    data = json.loads(path.read_text())
    for entry in data["machines"].values():
        for value in entry["rates"].values():
            value.pop("fit", None)
    path.write_text(json.dumps(data))
    old = RateBook(path)
    assert old.get("rhythm", "cpu", "h").fit == ratesmod.Fit()
    old.observe("rhythm", "cpu", "h", compute_s=5.4, audio_s=440.0, tracks=2, fit=longer)
    old.save()
    assert RateBook(path).get("rhythm", "cpu", "h").fit.as_list() == longer.as_list()
