"""How big and how slow is `mirflow report` at dataset scale?

Part 1 (in memory): a synthetic result table of N tracks (default 100,000) with the columns of a
loudness + spectral + tonal + rhythm + stems run (four stems per track, so 4N stem rows), built
into the report page with :func:`mirflow.results.report.build_report`. Prints the time to build the
page, its size, and how much of it is data (the rest is Plotly's bundle, a constant).

Part 2 (on disk, ``--disk M``, default 2,000): M track folders with a short WAV and a realistic
sidecar, then :func:`mirflow.results.table.collect` (reads every sidecar and audio header) and the
page; per-track time, to extrapolate the sidecar-reading cost to N.

    python benchmarks/report_scale.py [--tracks 100000] [--disk 2000] [--max-rows 5000]
                                      [--save big.html --chromium /usr/bin/chromium]

Part 3 (``--save`` and ``--chromium``): seconds until Chromium has rendered every chart of the saved
page (twice).

Values are random (seeded); they exercise the aggregation, not the features.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from mirflow.results.report import build_report
from mirflow.results.table import ResultSet, collect

KEYS = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
STEMS = ["bass", "drums", "other", "vocals"]
SPECTRAL = ["spectral_centroid", "spectral_bandwidth", "spectral_rolloff", "spectral_flatness",
            "spectral_flux", "zero_crossing_rate"]


def track_row(i: int, rng: np.random.Generator) -> dict:
    dur = float(rng.lognormal(5.2, 0.4))
    row = {"track": f"artist{i // 12:05d}/track{i:06d}", "path": f"artist{i // 12:05d}/track{i:06d}/full_mix.flac",
           "duration_s": dur, "sample_rate": 44100, "channels": 2, "codec": "flac",
           "lufs": float(rng.normal(-12, 3)), "lra": float(rng.gamma(4, 2)),
           "true_peak_dbtp": float(rng.normal(-1, 1)), "peak_dbfs": float(rng.normal(-1.2, 1)),
           "rms_dbfs": float(rng.normal(-15, 3)), "bpm": float(rng.uniform(60, 190)),
           "bpm_confidence": float(rng.beta(2, 5)), "beat_count": int(dur * 2),
           "onset_count": int(dur * 4), "onset_rate": 4.0, "onset_strength_mean": 1.0,
           "key": KEYS[int(rng.integers(12))], "scale": "major" if rng.random() < 0.6 else "minor",
           "key_strength": float(rng.uniform(0.3, 0.95)), "stems_analyzed": STEMS, "failed": None}
    for name in SPECTRAL:
        row[f"{name}_mean"] = float(rng.uniform(0.01, 3000))
        row[f"{name}_std"] = float(rng.uniform(0.01, 1000))
    if i % 997 == 0:
        row.update(lufs=None, failed=["loudness"])
    return row


def stem_rows(track: str, rng: np.random.Generator) -> list[dict]:
    return [{"track": track, "stem": s, "path": f"{track}/{s}.flac", "lufs": float(rng.normal(-18, 4)),
             "peak_dbfs": float(rng.normal(-3, 1.5)), "spectral_centroid_mean": float(rng.uniform(100, 4000))}
            for s in STEMS]


def browser_load(page_path: Path, chromium: str, repeat: int = 2) -> list[float]:
    """Seconds from navigation until the page says every chart has rendered (``body[data-ready]``)."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        for _ in range(repeat):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            t0 = time.perf_counter()
            page.goto(page_path.resolve().as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=300_000)
            times.append(round(time.perf_counter() - t0, 2))
            page.close()
        browser.close()
    return times


def in_memory(n: int, max_rows: int, save: Path | None = None) -> dict:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    tracks = [track_row(i, rng) for i in range(n)]
    stems = [s for r in tracks for s in stem_rows(r["track"], rng)]
    outcomes = {"loudness": {"status": {"ok": n - n // 997 - 1, "error": n // 997 + 1},
                             "errors": [(r["track"], f"DecodeError: cannot decode full_mix.flac at byte {i}")
                                        for i, r in enumerate(tracks) if r["failed"]]}}
    rs = ResultSet(root=Path("synthetic"), tracks=tracks, track_columns=list(tracks[0]), stems=stems,
                   stem_columns=list(stems[0]), outcomes=outcomes,
                   provenance={"mirflow_version": "bench", "dataset_root": "synthetic", "created": "now"})
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    page = build_report(rs, max_rows=max_rows)
    built = time.perf_counter() - t0
    if save is not None:
        save.write_text(page, encoding="utf-8")
    data = page.split('<script id="report-data" type="application/json">', 1)[1].split("</script>", 1)[0]
    return {"tracks": n, "stem_rows": len(stems), "synthesis_s": round(made, 2),
            "build_s": round(built, 2), "page_mb": round(len(page.encode()) / 1e6, 2),
            "data_mb": round(len(data.encode()) / 1e6, 3), "max_rows": max_rows}


def on_disk(m: int, max_rows: int) -> dict:
    import soundfile as sf

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(m):
            row = track_row(i, rng)
            folder = root / row["track"]
            folder.mkdir(parents=True)
            sf.write(folder / "full_mix.wav", np.zeros((441, 2), np.float32), 44100)
            data = {k: v for k, v in row.items()
                    if k not in ("track", "path", "duration_s", "sample_rate", "channels", "codec", "failed")}
            data["beats"] = [round(0.5 * b, 3) for b in range(row["beat_count"])]
            data["chroma_mean"] = [1 / 12] * 12
            for s in stem_rows(row["track"], rng):
                data.update({f"{s['stem']}_{k}": v for k, v in s.items() if k not in ("track", "stem", "path")})
            keys = sorted(data)
            data["_mirflow"] = {"loudness": {"version": 1, "params": "abc", "status": "ok", "keys": keys},
                                "stems": {"version": 1, "params": "def", "status": "ok",
                                          "keys": [k for k in keys if k.split("_")[0] in STEMS] + ["stems_analyzed"]}}
            (folder / f"{folder.name}.INFO").write_text(json.dumps(data))
        t0 = time.perf_counter()
        rs = collect(root)
        collected = time.perf_counter() - t0
        t0 = time.perf_counter()
        page = build_report(rs, max_rows=max_rows)
        built = time.perf_counter() - t0
    return {"tracks": m, "collect_s": round(collected, 2), "collect_ms_per_track": round(1000 * collected / m, 3),
            "build_s": round(built, 2), "page_mb": round(len(page.encode()) / 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--disk", type=int, default=2000)
    ap.add_argument("--max-rows", type=int, default=5000)
    ap.add_argument("--save", type=Path, help="keep the in-memory page here (an .html file)")
    ap.add_argument("--chromium", help="time opening the saved page in this Chromium (needs --save, playwright)")
    args = ap.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node() and 'this machine'}, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("in memory:", json.dumps(in_memory(args.tracks, args.max_rows, args.save)))
    if args.save and args.chromium:
        print("browser:  ", json.dumps({"page": str(args.save), "seconds_to_charts_rendered":
                                        browser_load(args.save, args.chromium)}))
    if args.disk:
        print("on disk:  ", json.dumps(on_disk(args.disk, args.max_rows)))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
