"""Compare mirflow's loudness analyzer with FFmpeg's ``ebur128`` filter on real music.

For every track (any ``full_mix.*`` under the given dataset folders) it measures integrated loudness
(I), loudness range (LRA) and true peak (TP) with both, prints one table row per track, then the
maximum and mean absolute differences against the targets (0.3 LU, 1 LU, 0.5 dB) and the time
mirflow took per track (decode and loudness separately, one core). FFmpeg's values are read from
the metadata of its last frame (3 decimals) rather than its 1-decimal summary (true peak: from the
summary when the linear metadata value is too small for 3 decimals to be precise).

FFmpeg's ``ebur128`` takes the 10th percentile of the gated short-term loudness at rank
``floor(0.1 n + 0.5)`` (1-based), whereas EBU Tech 3342's example code and libebur128 (and mirflow)
take ``round((n - 1) 0.1) + 1``: one rank lower on short tracks, which matters when a track is short
and fades steeply. The column ``dLRA*`` recomputes mirflow's LRA from mirflow's own short-term
loudness with FFmpeg's rank rule, to show how much of ``dLRA`` is that convention alone. Tracks
both meters find silent (mirflow: ``None``; FFmpeg: -70 LUFS) count as agreeing and are left out of
the statistics.

A second part times the analyzer on a synthetic 10-minute 44.1 kHz stereo track (CPU seconds and the
process's peak resident memory), the size the performance target is stated for.

Usage::

    python benchmarks/loudness_vs_ffmpeg.py corpus/orchestral corpus/beats [--json FILE]

Exit code 0 when every track is within the targets, 1 otherwise.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")      # one core, as the local executor's workers run
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mirflow.analyzers import get
from mirflow.analyzers import loudness as loudness_module
from mirflow.core.audio import TrackContext, decode
from mirflow.core.dataset import discover

TARGETS = {"I": 0.3, "LRA": 1.0, "TP": 0.5}


def ffmpeg_ebur128(path: Path) -> dict[str, float]:
    """I (LUFS), LRA (LU) and TP (dBTP) from FFmpeg's ebur128 filter (true peak on)."""
    with tempfile.TemporaryDirectory() as tmp:
        meta = Path(tmp, "meta.txt")
        proc = subprocess.run(
            ["ffmpeg", "-hide_banner", "-nostats", "-nostdin", "-i", str(path), "-map", "0:a:0",
             "-af", f"ebur128=peak=true:metadata=1,ametadata=mode=print:file={meta}",
             "-f", "null", "-"],
            check=True, capture_output=True, text=True)
        summary_peak = re.findall(r"Peak:\s*(-?[\d.]+|-inf|nan)\s*dBFS", proc.stderr)
        last: dict[str, str] = {}
        for line in meta.read_text().splitlines():
            if line.startswith("lavfi.r128.") and "=" in line:
                key, value = line[len("lavfi.r128."):].split("=", 1)
                last[key] = value
    tp_linear = float(last["true_peak"])
    if tp_linear >= 0.25:                     # 3 decimals of a linear value: < 0.035 dB
        tp = 20 * math.log10(tp_linear)
    else:                                     # the summary's dB value, 1 decimal
        tp = float(summary_peak[-1]) if summary_peak else float("nan")
    return {"I": float(last["I"]), "LRA": float(last["LRA"]), "TP": tp}


def lra_with_ffmpeg_rank_rule(samples: np.ndarray, sr: int) -> float:
    """mirflow's short-term loudness and gates, with FFmpeg ebur128's percentile ranks."""
    energy, bounds = loudness_module.k_weighted_cell_energy(samples, sr)
    cells = 30
    if len(energy) < cells:
        return float("nan")
    sums = np.lib.stride_tricks.sliding_window_view(energy, cells).sum(axis=-1)
    power = sums / (bounds[cells:] - bounds[:-cells])
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10 * np.log10(power)
    above = loud >= -70
    if not above.any():
        return float("nan")
    gate = -0.691 + 10 * math.log10(power[above].mean()) - 20
    kept = np.sort(loud[above & (loud >= gate)])
    n = len(kept)
    low = kept[max(int(0.10 * n + 0.5), 1) - 1]    # FFmpeg: first bin where the count from below
    high = kept[max(int(0.95 * n + 0.5), 1) - 1]   # reaches the rank / from above drops below it
    return float(high - low)


def mirflow_loudness(path: Path) -> tuple[dict[str, float], float, float, float]:
    """I, LRA, TP and LRA* (FFmpeg's rank rule) from mirflow, with the decode and analysis times
    (CPU seconds) and the duration."""
    analyzer = get("loudness")()
    t0 = time.process_time()
    audio = decode(path)
    t1 = time.process_time()
    ctx = TrackContext.from_array(audio.samples, audio.sr, path=path)
    out = analyzer.analyze(ctx)
    t2 = time.process_time()
    values = {"I": out["lufs"], "LRA": out["lra"], "TP": out["true_peak_dbtp"],
              "LRA*": lra_with_ffmpeg_rank_rule(audio.samples, audio.sr)}
    return ({k: float("nan") if v is None else v for k, v in values.items()},
            t1 - t0, t2 - t1, audio.duration)


def synthetic_timing(minutes: float = 10.0, sr: int = 44100, repeats: int = 3) -> dict[str, float]:
    """CPU seconds (best of ``repeats``) of the analyzer on seeded stereo noise, and the peak of the
    memory it allocates on top of the decoded signal (``tracemalloc``, a separate run)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n = int(minutes * 60 * sr)
    samples = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
    ctx = TrackContext.from_array(samples, sr)
    analyzer = get("loudness")()
    best = math.inf
    for _ in range(repeats):
        t0 = time.process_time()
        analyzer.analyze(ctx)
        best = min(best, time.process_time() - t0)
    tracemalloc.start()
    analyzer.analyze(ctx)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"minutes": minutes, "sr": sr, "cpu_s": best, "input_mib": samples.nbytes / 2**20,
            "analysis_peak_alloc_mib": peak / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path, help="dataset folders to compare on")
    parser.add_argument("--json", type=Path, help="also write every row and the summary here")
    parser.add_argument("--skip-synthetic", action="store_true", help="skip the 10-minute timing")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        parser.error("ffmpeg is not on PATH")

    tracks = [t for root in args.datasets for t in discover(root)]
    rows = []
    header = (f"{'track':<34} {'dur s':>6} | {'I mf':>7} {'I ff':>7} {'dI':>6} | {'LRA mf':>6} "
              f"{'LRA ff':>6} {'dLRA':>6} {'dLRA*':>6} | {'TP mf':>6} {'TP ff':>6} {'dTP':>6} | "
              f"{'dec s':>5} {'loud s':>6}")
    print(header)
    print("-" * len(header))
    for track in tracks:
        mine, t_decode, t_loud, duration = mirflow_loudness(track.mix)
        ref = ffmpeg_ebur128(track.mix)
        diff = {k: mine[k] - ref[k] for k in TARGETS}
        diff["LRA*"] = mine["LRA*"] - ref["LRA"]
        silent = math.isnan(mine["I"]) and ref["I"] <= -70.0
        label = f"{track.dir.parent.name}/{track.name}"[:34]
        rows.append({"track": label, "duration_s": duration, "mirflow": mine, "ffmpeg": ref,
                     "diff": diff, "silent": silent, "decode_cpu_s": t_decode,
                     "loudness_cpu_s": t_loud})
        print(f"{label:<34} {duration:6.1f} | {mine['I']:7.2f} {ref['I']:7.2f} {diff['I']:+6.2f} | "
              f"{mine['LRA']:6.2f} {ref['LRA']:6.2f} {diff['LRA']:+6.2f} {diff['LRA*']:+6.2f} | "
              f"{mine['TP']:6.2f} "
              f"{ref['TP']:6.2f} {diff['TP']:+6.2f} | {t_decode:5.2f} {t_loud:6.3f}"
              f"{'  (both silent)' if silent else ''}", flush=True)

    compared = [r for r in rows if not r["silent"]]
    summary: dict[str, object] = {"tracks": len(rows), "compared": len(compared),
                                  "both_silent": [r["track"] for r in rows if r["silent"]]}
    ok = True
    print()
    print(f"{len(compared)} tracks compared; both silent: {summary['both_silent'] or 'none'}")
    for key, target in {**TARGETS, "LRA*": TARGETS["LRA"]}.items():
        d = np.abs([r["diff"][key] for r in compared])
        worst = compared[int(np.nanargmax(d))]["track"] if len(d) else "-"
        within = bool(np.all(d <= target))
        if key in TARGETS:
            ok &= within
        summary[key] = {"max_abs": float(np.nanmax(d)), "mean_abs": float(np.nanmean(d)),
                        "target": target, "within": within, "worst_track": worst}
        print(f"{key:>3}: max |diff| {np.nanmax(d):.3f}  mean |diff| {np.nanmean(d):.3f}  "
              f"target {target}  {'OK' if within else 'MISSED'}  (worst: {worst})"
              f"{'  [LRA with FFmpeg rank rule, diagnostic]' if key == 'LRA*' else ''}")
    print(f"mean signed diff (mirflow - ffmpeg): I {np.mean([r['diff']['I'] for r in compared]):+.3f}, "
          f"LRA {np.mean([r['diff']['LRA'] for r in compared]):+.3f}, "
          f"TP {np.mean([r['diff']['TP'] for r in compared]):+.3f}")
    audio_s = sum(r["duration_s"] for r in rows)
    loud_s = sum(r["loudness_cpu_s"] for r in rows)
    decode_s = sum(r["decode_cpu_s"] for r in rows)
    summary["audio_s"] = audio_s
    summary["loudness_cpu_s"] = loud_s
    summary["decode_cpu_s"] = decode_s
    print(f"audio {audio_s / 60:.1f} min; loudness {loud_s:.2f} CPU s in all "
          f"({loud_s / max(len(rows), 1):.3f} s per track, {audio_s / max(loud_s, 1e-9):.0f}x real time); "
          f"decode {decode_s:.2f} CPU s")

    if not args.skip_synthetic:
        syn = synthetic_timing()
        summary["synthetic"] = syn
        print(f"synthetic {syn['minutes']:.0f} min {syn['sr']} Hz stereo: {syn['cpu_s']:.3f} CPU s "
              f"(best of 3); input {syn['input_mib']:.0f} MiB; the analysis allocates at most "
              f"{syn['analysis_peak_alloc_mib']:.1f} MiB more")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
