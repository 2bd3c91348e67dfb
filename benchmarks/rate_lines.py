"""Does a part per track in the rates make `mirflow plan` better on tracks of another length?

    python benchmarks/rate_lines.py [--corpus corpus/orchestral] [--calibrate 12] [--clips 30]
        [--seconds 8] [--whole 0] [--analyzers loudness,spectral,tonal,rhythm] [--workers 2]
        [--set ANALYZER.PARAM=VALUE ...]

Rates are measured on one set of tracks and used on another. Until the rates kept a line
(``compute = per_track + per_second x duration``, :class:`mirflow.run.rates.Fit`), a rate was the
ratio of compute to audio seconds: right for tracks as long as the rated ones, wrong for others
when an analyzer has work per track that does not grow with the audio. Steps, with an empty rates
cache (a temporary ``XDG_CACHE_HOME``):

1. ``mirflow run`` on ``--calibrate`` whole corpus tracks picked evenly over the corpus's
   durations (a real collection's spread: seconds-long cues to ten-minute pieces);
2. ``mirflow plan --json`` of two other datasets, with the rates as stored (the line) and with
   their line removed (the ratio alone, as before): ``--clips`` clips of ``--seconds`` from the
   middle of other corpus tracks, and the whole corpus tracks not calibrated on (``--whole N``: N of
   them, spread over their durations; 0: all);
3. ``mirflow run --json`` of each, for the compute each analyzer actually took.

Prints, per dataset and analyzer, the planned compute seconds by line and by ratio against the
measured ones (the run's timing report), and the plans' ETAs against the runs' wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clips import json_of, mirflow_cli  # noqa: E402


def mirflow(args: list[str], cache: Path) -> dict:
    """``mirflow ARGS --json`` with its own rates cache ``cache``: the JSON it printed."""
    proc, _ = mirflow_cli([*args, "--json"], dict(os.environ, XDG_CACHE_HOME=str(cache)))
    return json_of(proc, f"mirflow {args[0]}")


def link(track: Path, dest: Path) -> None:
    """``dest/<track folder>/<mix>`` linking to the corpus track's mix (the source is not changed)."""
    folder = dest / track.parent.name
    folder.mkdir(parents=True)
    (folder / track.name).symlink_to(track.resolve())


def clip(track: Path, dest: Path, seconds: float) -> None:
    """``dest/<track folder>/full_mix.flac``: ``seconds`` from the middle of ``track``."""
    info = sf.info(str(track))
    start = max(0, int((info.duration - seconds) / 2 * info.samplerate))
    y, sr = sf.read(str(track), start=start, frames=int(seconds * info.samplerate), always_2d=True)
    folder = dest / track.parent.name
    folder.mkdir(parents=True)
    sf.write(str(folder / "full_mix.flac"), y, sr)


def without_lines(cache: Path) -> Path:
    """A copy of ``cache`` whose rates keep only their ratios (what earlier mirflow read)."""
    copy = cache.with_name(cache.name + "-ratio")
    shutil.copytree(cache, copy)
    path = copy / "mirflow" / "rates.json"
    data = json.loads(path.read_text())
    for entry in data["machines"].values():
        for value in entry["rates"].values():
            value.pop("fit", None)
    path.write_text(json.dumps(data))
    return copy


def compare(label: str, dataset: Path, common: list[str], line: Path, ratio: Path, run: Path) -> None:
    by_line = mirflow(["plan", str(dataset), *common], line)
    by_ratio = mirflow(["plan", str(dataset), *common], ratio)
    done = mirflow(["run", str(dataset), *common], run)
    timing = done["timing"]
    print(f"\n{label}: {by_line['due_tracks']} tracks, {by_line['audio_s'] / 60:.1f} min of audio\n")
    print("| analyzer | planned by line, s | planned by ratio, s | measured, s | line / measured | ratio / measured |")
    print("|---|---|---|---|---|---|")
    totals = [0.0, 0.0, 0.0]
    for name, measured in sorted(timing["analyzers"].items()):
        a, b, c = (by_line["analyzers"][name]["compute_s"], by_ratio["analyzers"][name]["compute_s"],
                   measured["compute_s"])
        totals = [totals[0] + a, totals[1] + b, totals[2] + c]
        print(f"| {name} | {a:.3f} | {b:.3f} | {c:.3f} | {a / c:.2f} | {b / c:.2f} |")
    a, b, c = totals
    print(f"| all analyzers | {a:.3f} | {b:.3f} | {c:.3f} | {a / c:.2f} | {b / c:.2f} |")
    wall = done["wall_seconds"]
    print(f"| ETA vs the run's wall time | {by_line['eta_s']} | {by_ratio['eta_s']} | {wall:.1f} | "
          f"{by_line['eta_s'] / wall:.2f} | {by_ratio['eta_s'] / wall:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus/orchestral"))
    ap.add_argument("--calibrate", type=int, default=12)
    ap.add_argument("--clips", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--whole", type=int, default=0, help="whole tracks to plan and run (0: all others)")
    ap.add_argument("--analyzers", default="loudness,spectral,tonal,rhythm")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="ANALYZER.PARAM=VALUE",
                    help="passed to every mirflow command (e.g. a local separation model)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    tracks = sorted((sf.info(str(f)).duration, f) for f in args.corpus.glob("*/full_mix.*"))
    if len(tracks) <= args.calibrate:
        raise SystemExit(f"{args.corpus} holds {len(tracks)} tracks; --calibrate must be fewer")
    picked = {int(i) for i in np.linspace(0, len(tracks) - 1, args.calibrate)}
    calibrate = [f for i, (_, f) in enumerate(tracks) if i in picked]
    others = [f for i, (_, f) in enumerate(tracks) if i not in picked]
    if args.whole and args.whole < len(others):
        others = [others[int(i)] for i in np.linspace(0, len(others) - 1, args.whole)]
    longer = [f for d, f in tracks if d >= args.seconds + 2][:args.clips]
    common = ["-a", args.analyzers, "-j", str(args.workers), "--device", "cpu",
              *(x for s in args.sets for x in ("--set", s))]
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      "cores": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 2),
                      "command": "python benchmarks/rate_lines.py " + " ".join(sys.argv[1:]),
                      "calibrated_on_s": [round(d) for d, f in tracks if f in calibrate]}))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for f in calibrate:
            link(f, work / "calibrate")
        for f in others:
            link(f, work / "whole")
        for f in longer:
            clip(f, work / "clips", args.seconds)
        cache = work / "cache"
        mirflow(["run", str(work / "calibrate"), *common], cache)
        ratio = without_lines(cache)
        # the runs measured here use a cache of their own: they must not change the rates compared
        compare(f"{len(longer)} clips of {args.seconds:g} s", work / "clips", common, cache, ratio,
                work / "cache-runs")
        compare(f"the {len(others)} other whole tracks", work / "whole", common, cache, ratio,
                work / "cache-runs")


if __name__ == "__main__":
    main()
