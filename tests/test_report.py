"""The HTML report: aggregation (histograms, quartiles, outliers, failure groups), size that does not
grow with the number of tracks, and the page in a real headless Chromium (no console errors, every
chart rendered, search filters the table)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import mirflow
from mirflow.results.report import Thresholds, build_report, failure_groups, histogram, outliers, quartiles
from mirflow.results.table import ResultSet
from results_fixtures import make_analysed_dataset

CHROMIUM = os.environ.get("MIRFLOW_CHROMIUM", "/usr/bin/chromium")


def _rs(tracks: list[dict], stems: list[dict] | None = None, outcomes: dict | None = None) -> ResultSet:
    return ResultSet(root=Path("."), tracks=tracks, track_columns=sorted({k for t in tracks for k in t}),
                     stems=stems or [], stem_columns=[], outcomes=outcomes or {},
                     provenance={"mirflow_version": "x", "dataset_root": "/d", "created": "now"})


def test_histogram_and_quartiles_known_answers() -> None:
    h = histogram(np.array([0.05, 0.15, 0.15, 0.95, 2.0]), bins=10, value_range=(0.0, 1.0))
    assert h["counts"] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2] and h["clipped"] == 1
    assert h["edges"][0] == 0.0 and h["edges"][-1] == 1.0
    # one extreme value does not stretch the axis: it is counted in the end bar
    vals = np.concatenate([np.linspace(-3.0, 0.5, 99), [-78.0]])
    h = histogram(vals)
    assert h["edges"][0] > -20 and h["clipped"] == 1 and sum(h["counts"]) == 100
    q = quartiles(np.arange(1.0, 101.0))
    assert (q["q1"], q["median"], q["q3"]) == (25.75, 50.5, 75.25)
    assert q["lowerfence"] == 1.0 and q["upperfence"] == 100.0 and q["n"] == 100
    assert quartiles(np.array([])) is None


def test_outliers_and_failure_groups() -> None:
    tracks = [
        {"track": "hot", "true_peak_dbtp": 0.7, "lufs": -9.0, "duration_s": 200.0, "bpm_confidence": 0.4},
        {"track": "quiet", "true_peak_dbtp": -60.0, "lufs": None, "duration_s": 3.0, "bpm_confidence": 0.05},
        {"track": "fine", "true_peak_dbtp": -1.0, "lufs": -14.0, "duration_s": 120.0, "bpm_confidence": 0.5},
        {"track": "bad", "failed": ["loudness"]},
    ]
    stems = [{"track": "hot", "stem": "drums", "peak_dbfs": 0.0}, {"track": "hot", "stem": "bass", "peak_dbfs": -3.0}]
    outcomes = {"loudness": {"status": {}, "errors": [("bad", "DecodeError: 12 bytes at 0x3 in 'd/bad/full_mix.ogg'"),
                                                       ("worse", "DecodeError: 99 bytes at 0x7 in 'd/worse/full_mix.ogg'")]},
                "rhythm": {"status": {}, "errors": [("bad", "DecodeError: 12 bytes at 0x3 in 'd/bad/full_mix.ogg'")]}}
    got = {o["title"].split(" (")[0].split(" over")[0]: o for o in outliers(_rs(tracks, stems), Thresholds())}
    assert [r[0] for r in got["True peak"]["rows"]] == ["hot"]
    assert got["Clipped stems"]["rows"] == [["hot", "drums", "peak 0.00 dBFS"]]
    assert [r[0] for r in got["Near-silent tracks"]["rows"]] == ["quiet"]  # "bad" failed: not silent
    assert [r[0] for r in got["Very short tracks"]["rows"]] == ["quiet"]
    assert [r[0] for r in got["Low tempo confidence"]["rows"]] == ["quiet"]
    groups = failure_groups(_rs(tracks, outcomes=outcomes))
    assert len(groups) == 1 and groups[0]["tracks"] == 2  # numbers and paths folded: one cause, one group
    assert groups[0]["analyzers"] == ["loudness", "rhythm"]


def test_page_size_does_not_grow_with_tracks() -> None:
    rng = np.random.default_rng(0)

    def rows(n: int) -> list[dict]:
        return [{"track": f"t{i:06d}", "lufs": float(rng.normal(-14, 3)), "bpm": float(rng.uniform(60, 180)),
                 "key": "A", "scale": "minor", "duration_s": 180.0} for i in range(n)]

    small = len(build_report(_rs(rows(500)), max_rows=500))
    large = len(build_report(_rs(rows(20000)), max_rows=500))
    assert abs(large - small) < 20_000  # aggregated charts: 40x the tracks, same page


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_analysed_dataset(tmp_path_factory.mktemp("report") / "ds")


def _browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; scripts/setup.sh does)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; scripts/setup.sh does "
                    "as root; or set MIRFLOW_CHROMIUM)")
    return sync_playwright


def test_report_in_headless_chromium(analysed: Path, tmp_path: Path) -> None:
    sync_playwright = _browser()
    out = tmp_path / "report.html"
    proc = mirflow("report", str(analysed), "-o", str(out), check=True)
    assert "wrote" in proc.stderr
    text = out.read_text()
    assert "http://" not in text.split("<script>", 1)[0] and "<script src" not in text  # self-contained
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None)
            page.goto(out.as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            charts = page.locator("div.chart")
            n = charts.count()
            assert n >= 8  # tempo, confidence, key, 3 loudness, per-stem loudness, spectral...
            assert page.locator("div.chart[data-rendered='1'] svg.main-svg").count() >= n
            assert page.locator("#chart-stem-lufs").count() == 1 and page.locator("#chart-key").count() == 1
            assert page.locator("#tracks tbody tr").count() == 4
            assert "broken" in page.locator("#failure-list").inner_text()
            page.fill("#search", "song two")
            assert page.locator("#tracks tbody tr").count() == 1
            assert "song two" in page.locator("#tracks tbody").inner_text()
            page.fill("#search", "")
            page.locator("#tracks th", has_text="LUFS").click()  # sort ascending: the empty cell last
            first = page.locator("#tracks tbody tr").first.inner_text()
            assert "broken" not in first
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert (tmp_path / "report.png").stat().st_size > 10_000
            assert errors == [] and requests == []
        finally:
            browser.close()
