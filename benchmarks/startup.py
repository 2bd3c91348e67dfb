"""Start-up: seconds from ``mirflow run`` to the first analysed track, with warm caches.

    python benchmarks/startup.py [--corpus corpus/orchestral] [--seconds 20] [--repeats 3]
                                 [--sets loudness,default] [--workers 1] [--tracks 1] [--out DIR]

A dataset of ``--tracks`` tracks (a ``--seconds`` clip from the middle of each of the first corpus
tracks, or synthetic songs when there is no corpus) is analysed by the real CLI, ``mirflow run DATASET -a SET
--force all --json`` (the executable next to this Python; ``python -m mirflow`` without one), once to warm every cache (numba's on-disk cache, the OS file cache), then
``--repeats`` times per set, the sets interleaved. Per run:

* ``wall``: the whole command, interpreter start to exit;
* ``first track``: an upper bound of command to first track,
  ``wall - (run wall - first result)``, where ``run wall`` and ``first result`` are the coordinator's
  own figures from the JSON timing report (so the bound includes the interpreter's exit);
* ``before run``: command to the coordinator's start (interpreter, imports, options):
  ``wall - run wall`` minus the exit;
* ``CPU``: user + system seconds of the whole process tree (the command and the workers it waited
  for), steadier than wall time on a shared machine.

Then ``python -X importtime`` breaks down the imports of the command's process
(``import mirflow.cli.commands`` plus loading the analyzer registry) and of a worker (importing the
run's analyzer modules and what their ``setup()`` imports, measured by running ``setup()``), top
modules by cumulative time. Results go to stdout and, with ``--out``, to ``startup.json`` and
``startup.md`` in that folder.

``--src LABEL=DIR`` (repeatable) compares source trees side by side in one run (e.g. an export of an
older commit, ``git archive COMMIT | tar -x -C DIR``): each run of each set is repeated with
``PYTHONPATH=DIR/src``, interleaved, labelled ``SET [LABEL]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from clips import children_cpu  # benchmarks/ is on sys.path when run as a script

DEFAULT_SETS = ("loudness", "default")


def make_dataset(root: Path, corpus: Path | None, seconds: float, tracks: int = 1) -> str:
    """``tracks`` tracks at ``root/clip-N/full_mix.flac`` (a ``seconds`` clip from the middle of
    each of the first corpus tracks long enough, else synthetic songs); says where they came from."""
    sources = sorted(corpus.glob("*/full_mix.*")) if corpus and corpus.is_dir() else []
    names = []
    for src in sources:
        if len(names) == tracks:
            break
        if sf.info(str(src)).duration < seconds + 2:
            continue
        from mirflow.core.audio import decode

        audio = decode(src)
        start = audio.frames // 2 - int(seconds * audio.sr) // 2
        folder = root / f"clip-{len(names)}"
        folder.mkdir(parents=True)
        sf.write(str(folder / "full_mix.flac"),
                 audio.samples[:, start:start + int(seconds * audio.sr)].T, audio.sr)
        names.append(src.parent.name)
    from mirflow.core.synth import synth_song

    sr = 44100
    synthetic = 0
    while len(names) < tracks:
        y = synth_song(bpm=120.0 + 7 * synthetic, seconds=seconds, sr=sr, seed=1 + synthetic)
        folder = root / f"clip-{len(names)}"
        folder.mkdir(parents=True)
        sf.write(str(folder / "full_mix.flac"), np.asarray(y).T if np.ndim(y) == 2 else y, sr)
        names.append("synthetic song")
        synthetic += 1
    return f"{', '.join(names)} ({seconds:.0f} s clip{'s' if tracks > 1 else ''})"


def mirflow_command() -> list[str]:
    """The ``mirflow`` executable users type, installed next to this interpreter (it starts
    differently from ``python -m mirflow``: spawned workers re-run a main *script*); ``python -m
    mirflow`` where there is none."""
    script = Path(sys.executable).with_name("mirflow")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mirflow"]


def run_once(dataset: Path, analyzers: str, workers: int, src: Path | None = None) -> dict:
    chosen = [] if analyzers == "default" else ["-a", analyzers]
    cmd = [*mirflow_command(), "run", str(dataset), *chosen, "--force", "all", "--json",
           "-j", str(workers)]
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src / "src"), env.get("PYTHONPATH")]))
    used = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    cpu = children_cpu() - used
    try:
        summary = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"mirflow run gave no JSON (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    timing = summary.get("timing") or {}
    if proc.returncode not in (0, 1) or timing.get("first_result_s") is None:
        raise SystemExit(f"mirflow run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    run_wall = summary["wall_seconds"]
    return {"wall_s": wall, "cpu_s": cpu, "run_wall_s": run_wall, "first_result_in_run_s": timing["first_result_s"],
            "first_track_s": wall - (run_wall - timing["first_result_s"]),
            "before_run_s": wall - run_wall,
            "analyzers": [a for a, c in summary["analyzers"].items() if c.get("done")]}


def importtime(code: str, top: int = 12) -> list[tuple[str, float]]:
    """Top modules by cumulative import time (s) when running ``code`` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                          text=True)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((m.group(4), int(m.group(2)) / 1e6, len(m.group(3))))
    # keep top-level entries of each import chain (indent 1) and notable deep ones
    rows.sort(key=lambda r: -r[1])
    seen: list[tuple[str, float]] = []
    for name, secs, _ in rows:
        if len(seen) >= top:
            break
        if not any(name.startswith(s + ".") for s, _ in seen):
            seen.append((name, secs))
    return seen


def worker_code(analyzers: list[str]) -> str:
    """What a worker does before its first track: defer what workers defer, import the registry,
    build and set up."""
    return ("from mirflow.core import imports\n"
            "for m in getattr(imports, 'IN_WORKERS', ()):\n"
            "    imports.defer(m)\n"
            "from mirflow import analyzers as r\n"
            f"for n in {analyzers!r}:\n"
            "    a = r.get(n)()\n"
            "    a.unavailable_reason() or a.setup('cpu')\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus/orchestral"))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sets", default=",".join(DEFAULT_SETS),
                    help="comma-separated analyzer sets; 'default' = mirflow's default set; "
                         "use + inside a set: loudness+spectral")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tracks", type=int, default=1,
                    help="clips in the dataset (more than one to see several workers start)")
    ap.add_argument("--label", default="", help="a label for this measurement (e.g. before/after)")
    ap.add_argument("--out", type=Path, help="folder for startup.json and startup.md")
    ap.add_argument("--src", action="append", default=[], metavar="LABEL=DIR",
                    help="also run with PYTHONPATH=DIR/src (repeatable), interleaved")
    args = ap.parse_args()
    base = [s.replace("+", ",") for s in args.sets.split(",") if s]
    trees: dict[str, Path | None] = {"": None}
    for item in args.src:
        label, _, folder = item.partition("=")
        trees = ({} if trees == {"": None} else trees) | {label: Path(folder).resolve()}
    runs = [(f"{s} [{label}]" if label else s, s, src) for s in base for label, src in trees.items()]
    sets = [name for name, _, _ in runs]

    env = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
           "machine": platform.machine(), "cores": os.cpu_count(), "load_avg_start": os.getloadavg(),
           "workers": args.workers, "label": args.label}
    with tempfile.TemporaryDirectory(prefix="mirflow-startup-") as tmp:
        dataset = Path(tmp) / "dataset"
        env["track"] = make_dataset(dataset, args.corpus, args.seconds, args.tracks)
        print(json.dumps(env), flush=True)
        results: dict[str, list[dict]] = {s: [] for s in sets}
        for s, analyzers, src in runs:  # warm every cache first
            first = run_once(dataset, analyzers, args.workers, src)
            results[s + " (first)"] = [first]
            print(f"warm-up {s}: {first['wall_s']:.2f} s", flush=True)
        for rep in range(args.repeats):
            for s, analyzers, src in runs:
                r = run_once(dataset, analyzers, args.workers, src)
                results[s].append(r)
                print(f"{s:12s} run {rep + 1}: wall {r['wall_s']:.2f} s, first track <= "
                      f"{r['first_track_s']:.2f} s, before run {r['before_run_s']:.2f} s, "
                      f"CPU {r['cpu_s']:.2f} s", flush=True)
        ran = {s: results[s][0]["analyzers"] for s in sets}
        imports = {"command": importtime("import mirflow.cli.commands\n"
                                         "from mirflow import analyzers as r; r.available_names()")}
        for b in base:  # with the interpreter's own sys.path (the tree this script runs in)
            imports["worker " + b] = importtime(worker_code(next(ran[s] for s, a, _ in runs if a == b)))
    env["load_avg_end"] = os.getloadavg()
    summary = {s: {"analyzers": ran[s],
                   "first_track_s_median": statistics.median(r["first_track_s"] for r in results[s]),
                   "wall_s_median": statistics.median(r["wall_s"] for r in results[s]),
                   "before_run_s_median": statistics.median(r["before_run_s"] for r in results[s]),
                   "cpu_s_median": statistics.median(r["cpu_s"] for r in results[s]),
                   "runs": results[s]} for s in sets}
    lines = [f"Start-up {args.label} ({env['date']}, {env['cores']} cores, load average "
             f"{env['load_avg_start'][0]:.1f} -> {env['load_avg_end'][0]:.1f}; track: {env['track']}; "
             f"`python benchmarks/startup.py --repeats {args.repeats} --workers {args.workers} --tracks {args.tracks}`)", "",
             "| set | analyzers | command to first track, s (median) | whole command, s | before the run starts, s | CPU s (process tree) |",
             "|---|---|---|---|---|---|"]
    for s in sets:
        m = summary[s]
        lines.append(f"| {s} | {', '.join(m['analyzers'])} | {m['first_track_s_median']:.2f} | "
                     f"{m['wall_s_median']:.2f} | {m['before_run_s_median']:.2f} | {m['cpu_s_median']:.2f} |")
    lines += ["", "Largest imports (cumulative s, `python -X importtime`):", ""]
    for where, top in imports.items():
        lines.append(f"- {where}: " + ", ".join(f"{n} {t:.2f}" for n, t in top[:8]))
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "startup.json").write_text(json.dumps({"env": env, "sets": summary,
                                                           "imports": imports}, indent=1))
        (args.out / "startup.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
