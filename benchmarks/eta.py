"""How good is ``mirflow plan``'s ETA on real music, starting from nothing: sample, plan, run.

    python benchmarks/eta.py [--corpus corpus/orchestral] [--tracks 8] [--seconds 30] [--sample 2]
                             [--analyzers default|separation|loudness,...] [--workers 2]
                             [--work DIR] [--keep]

What a user with a new dataset does, with full-size random-weight models (htdemucs, the VGGish
two-stage classifiers; speed does not depend on the weights) and an empty rates cache (a temporary
``XDG_CACHE_HOME``, so nothing measured earlier on this machine helps):

1. ``mirflow plan DATASET``: the ETA must be unknown (no rate measured yet);
2. ``mirflow run DATASET --limit S``: analyses S tracks spread over the dataset, measuring the rates;
3. ``mirflow plan DATASET --json``: the ETA of the rest;
4. ``mirflow run DATASET --json``: the rest, timed; the ETA is compared with the run's own wall time
   (``wall_seconds``: from the coordinator's start, which is what the ETA estimates) and with the whole
   command's (interpreter start to exit).

Tracks: ``--tracks`` clips of ``--seconds`` from the middle of the first corpus tracks long enough
(``--seconds 0``: whole tracks). Prints one JSON line per step and a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pipeline  # noqa: E402  - benchmarks/pipeline.py: corpus clips and random-weight models


from clips import json_of as as_json, mirflow_cli as mirflow  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus/orchestral"))
    ap.add_argument("--tracks", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--sample", type=int, default=2, help="tracks of the calibration run (--limit)")
    ap.add_argument("--analyzers", default="default",
                    help="'default' (every analyzer, random-weight models) or a comma-separated set")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep --work afterwards")
    args = ap.parse_args()
    if args.sample >= args.tracks:
        raise SystemExit("--sample must be smaller than --tracks")

    work = args.work or Path(tempfile.mkdtemp(prefix="mirflow-eta-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        dataset = work / "dataset"
        if dataset.exists():
            raise SystemExit(f"{dataset} exists: give an empty --work folder")
        pipeline.make_tracks(args.corpus, dataset, args.tracks, args.seconds)
        common = ["-j", str(args.workers), "--device", "cpu"]
        if args.analyzers == "default":
            pipeline.build_demucs_repo(work / "demucs")
            pipeline.build_classifiers(work / "single", work / "two_stage")
            # kept in DATASET/mirflow.toml by the sample run's --save-config, as a user would
            models = ["--sep-repo", str(work / "demucs"), "--models-dir", str(work / "two_stage")]
        else:
            common += ["-a", args.analyzers]
            models = []
        env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"))
        plan_args = ["plan", str(dataset), *common]
        print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                          "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                          "load_avg": round(os.getloadavg()[0], 2),
                          "command": "python benchmarks/eta.py " + " ".join(sys.argv[1:])}), flush=True)

        before = as_json(mirflow([*plan_args, "--json"], env)[0], "mirflow plan")  # models unknown yet
        print(json.dumps({"step": "plan before", "eta_s": before["eta_s"],
                          "missing_rates": before["missing_rates"]}), flush=True)
        proc, sample_wall = mirflow(["run", str(dataset), *common, *models, "--save-config",
                                     "--limit", str(args.sample), "--json"], env)
        sample = as_json(proc, "mirflow run --limit")
        print(json.dumps({"step": "sample run", "tracks": sample["tracks_processed"],
                          "held_back": sample["held_back"], "wall_s": round(sample_wall, 2),
                          "failures": sample["failures"][:3]}), flush=True)
        planned = as_json(mirflow([*plan_args, "--json"], env)[0], "mirflow plan")
        print(json.dumps({"step": "plan after the sample", "due_tracks": planned["due_tracks"],
                          "eta_s": planned["eta_s"], "startup_s": planned["startup_s"],
                          "missing_rates": planned["missing_rates"],
                          "per_analyzer_s": {n: a["compute_s"] for n, a in planned["analyzers"].items()
                                             if a["compute_s"]}}), flush=True)
        proc, rest_wall = mirflow(["run", str(dataset), *common, "--json"], env)
        rest = as_json(proc, "mirflow run")
        timing = rest.get("timing") or {}
        print(json.dumps({"step": "the rest", "tracks": rest["tracks_processed"],
                          "run_wall_s": rest["wall_seconds"], "command_wall_s": round(rest_wall, 2),
                          "first_result_s": timing.get("first_result_s"),
                          "startup_s": timing.get("startup_s"),
                          "workers_busy": (timing.get("stages") or {}).get("workers", {}).get("busy_fraction"),
                          "failures": rest["failures"][:3]}), flush=True)
        eta = planned["eta_s"]
        print(f"\n| tracks | sample | ETA before | ETA after the sample | run wall s | command wall s "
              f"| ETA / run wall |\n|---|---|---|---|---|---|---|\n"
              f"| {planned['due_tracks']}, {planned['audio_s'] / 60:.1f} min | {args.sample} tracks, "
              f"{sample_wall:.1f} s | {before['eta_s'] if before['eta_s'] is not None else 'unknown'} "
              f"| {eta} s | {rest['wall_seconds']:.1f} | {rest_wall:.1f} | "
              f"{eta / rest['wall_seconds']:.2f} |" if eta else "no ETA after the sample")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
