"""CPU features on real music: the seed's librosa scripts vs ``mirflow run``, side by side.

    python benchmarks/cpu_features.py [--corpus DIR ...] [--tracks N | --all] [--repeat R]
                                      [--configs a,b,c,d] [--workers N] [--memory] [--json FILE]

Four configurations compute the same CPU features (loudness, spectral shape, chroma + key,
onsets + tempo/beats) on the same tracks, one after the other in one run, interleaved when
``--repeat`` > 1 (the minimum over repetitions is reported, and the spread as noise):

(a) **seed 'original' style**: one function per feature, and every function loads the file
    itself with ``librosa.load`` and computes its feature independently, serially, default thread
    pools. Nine loads per track:

    - loudness: ``librosa.load(sr=None, mono=False)`` + ``pyloudnorm.Meter(sr).integrated_loudness``;
    - spectral centroid, bandwidth, rolloff, flatness, zero-crossing rate: ``librosa.feature.*``
      with ``y=``, each on its own ``librosa.load`` (default ``sr=22050``: resampled, mono);
    - chroma + key: ``librosa.feature.chroma_stft`` on its own load (tuning estimated by librosa),
      key by Krumhansl-Schmuckler correlation of the mean chroma;
    - onsets: ``librosa.onset.onset_detect`` on its own load;
    - tempo and beats: ``librosa.beat.beat_track`` on its own load.

(b) **seed's recommended serial loop** (PERFORMANCE_GUIDE.md: "serial processing, let libraries
    handle threading"): one loop over the tracks; per track, each of the four modules (loudness,
    spectral, tonal, rhythm) calls ``librosa.load`` once and computes that module's features of (a)
    from its one signal (so 4 loads per track instead of 9; each librosa feature function still
    computes its own STFT from ``y``, as the seed's scripts do). Default thread pools.

(c) ``mirflow run DATASET -a loudness,spectral,tonal,rhythm --workers 1 --json`` (subprocess).

(d) the same with ``--workers <cores>`` (``os.cpu_count()`` unless ``--workers``).

Every configuration is a fresh Python process, so all four pay their imports (librosa's numba
code compiles at import: seconds) exactly as a user running them would; (a) and (b) also report
their compute time without the start-up. mirflow runs on a temporary dataset of symlinks to the
corpus files (the corpus is never written to), with its sidecars deleted before every run.

Reported per configuration: wall seconds (min over repetitions, and the max), seconds per track,
realtime factor (audio seconds per wall second), CPU seconds (user + system of the whole process
tree), peak RSS of the largest process, and the speedups (d)/(a), (c)/(a), (d)/(b), (c)/(b).
A start-up run of mirflow on one 5-second track measures its fixed cost per run.

``--stages AUDIO`` only breaks one file down: CPU seconds and peak RSS of each mirflow stage (as a
worker runs it, thread pools at 1) and of each of (a)'s feature functions.

``--memory`` also builds a 600 s stereo 44.1 kHz FLAC from real tracks (concatenated, looped) in a
temporary dataset and reports the peak RSS of ``mirflow run --workers 1`` (and ``--executor
serial``) on it, from ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a wrapper process.

Thread-pool environment variables are left as found for (a) and (b) (the defaults), except that
OMP/OPENBLAS/MKL/NUMBA thread counts are removed so they really are the defaults; mirflow sets its
own per worker. ``OPENBLAS_CORETYPE`` is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANALYZERS = "loudness,spectral,tonal,rhythm"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
DEFAULT_CORPUS = "corpus/orchestral"

# Krumhansl-Kessler key profiles (C major / C minor), as the seed's key detection uses.
_KK_MAJOR = [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]
_KK_MINOR = [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]
_NOTES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


# =================================================================================================
# (a) the seed's 'original' style: one function per feature, each loads the file itself
# =================================================================================================
def _stats(name: str, x) -> dict:
    return {f"{name}_mean": float(x.mean()), f"{name}_std": float(x.std())}


def key_from_chroma(chroma_mean) -> dict:
    """Krumhansl-Schmuckler: the rotation of the major/minor profile best correlated with the chroma."""
    import numpy as np

    best = (-2.0, "", "")
    for scale, profile in (("major", _KK_MAJOR), ("minor", _KK_MINOR)):
        for k in range(12):
            r = float(np.corrcoef(chroma_mean, np.roll(profile, k))[0, 1])
            if r > best[0]:
                best = (r, _NOTES[k], scale)
    return {"key": best[1], "scale": best[2], "key_strength": best[0]}


def feature_loudness(path: str) -> dict:
    import librosa
    import pyloudnorm as pyln

    y, sr = librosa.load(path, sr=None, mono=False)
    data = y.T if y.ndim == 2 else y
    return {"lufs": float(pyln.Meter(sr).integrated_loudness(data))}


def feature_spectral_centroid(path: str) -> dict:
    import librosa

    y, sr = librosa.load(path)
    return _stats("spectral_centroid", librosa.feature.spectral_centroid(y=y, sr=sr))


def feature_spectral_bandwidth(path: str) -> dict:
    import librosa

    y, sr = librosa.load(path)
    return _stats("spectral_bandwidth", librosa.feature.spectral_bandwidth(y=y, sr=sr))


def feature_spectral_rolloff(path: str) -> dict:
    import librosa

    y, sr = librosa.load(path)
    return _stats("spectral_rolloff", librosa.feature.spectral_rolloff(y=y, sr=sr))


def feature_spectral_flatness(path: str) -> dict:
    import librosa

    y, sr = librosa.load(path)
    return _stats("spectral_flatness", librosa.feature.spectral_flatness(y=y))


def feature_zero_crossing_rate(path: str) -> dict:
    import librosa

    y, sr = librosa.load(path)
    return _stats("zero_crossing_rate", librosa.feature.zero_crossing_rate(y))


def feature_chroma_key(path: str) -> dict:
    import librosa

    y, sr = librosa.load(path)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr)
    mean = chroma.mean(axis=1)
    return {"chroma_mean": [float(v) for v in mean / mean.sum()], **key_from_chroma(mean)}


def feature_onsets(path: str) -> dict:
    import librosa

    y, sr = librosa.load(path)
    onsets = librosa.onset.onset_detect(y=y, sr=sr, units="time")
    return {"onset_count": int(len(onsets)), "onset_rate": len(onsets) / (len(y) / sr)}


def feature_tempo(path: str) -> dict:
    import librosa
    import numpy as np

    y, sr = librosa.load(path)
    tempo, beats = librosa.beat.beat_track(y=y, sr=sr, units="time")
    return {"bpm": float(np.atleast_1d(tempo)[0]), "beat_count": int(len(beats))}


ORIGINAL_FEATURES = (feature_loudness, feature_spectral_centroid, feature_spectral_bandwidth,
                     feature_spectral_rolloff, feature_spectral_flatness, feature_zero_crossing_rate,
                     feature_chroma_key, feature_onsets, feature_tempo)


def analyze_original(path: str) -> dict:
    """(a): every feature function on its own load, one after the other."""
    out: dict = {}
    for f in ORIGINAL_FEATURES:
        out.update(f(path))
    return out


# =================================================================================================
# (b) the seed's recommended serial loop: one load per module per track
# =================================================================================================
def module_loudness(path: str) -> dict:
    return feature_loudness(path)  # already one load (native rate, all channels)


def module_spectral(path: str) -> dict:
    import librosa

    y, sr = librosa.load(path)
    out = _stats("spectral_centroid", librosa.feature.spectral_centroid(y=y, sr=sr))
    out.update(_stats("spectral_bandwidth", librosa.feature.spectral_bandwidth(y=y, sr=sr)))
    out.update(_stats("spectral_rolloff", librosa.feature.spectral_rolloff(y=y, sr=sr)))
    out.update(_stats("spectral_flatness", librosa.feature.spectral_flatness(y=y)))
    out.update(_stats("zero_crossing_rate", librosa.feature.zero_crossing_rate(y)))
    return out


def module_tonal(path: str) -> dict:
    import librosa

    y, sr = librosa.load(path)
    mean = librosa.feature.chroma_stft(y=y, sr=sr).mean(axis=1)
    return {"chroma_mean": [float(v) for v in mean / mean.sum()], **key_from_chroma(mean)}


def module_rhythm(path: str) -> dict:
    import librosa
    import numpy as np

    y, sr = librosa.load(path)
    onsets = librosa.onset.onset_detect(y=y, sr=sr, units="time")
    tempo, beats = librosa.beat.beat_track(y=y, sr=sr, units="time")
    return {"onset_count": int(len(onsets)), "onset_rate": len(onsets) / (len(y) / sr),
            "bpm": float(np.atleast_1d(tempo)[0]), "beat_count": int(len(beats))}


SEED_MODULES = (module_loudness, module_spectral, module_tonal, module_rhythm)


def analyze_seed_loop(path: str) -> dict:
    """(b): the four modules of one track, each with its own single load."""
    out: dict = {}
    for m in SEED_MODULES:
        out.update(m(path))
    return out


STYLES = {"a": analyze_original, "b": analyze_seed_loop}


def _child(style: str, paths: list[str]) -> None:
    """Run style ``a`` or ``b`` over ``paths`` serially; print one JSON line of timings and values."""
    t0 = time.perf_counter()
    import librosa  # noqa: F401  (start-up cost: numba compiles librosa's kernels on import)
    import librosa.beat  # noqa: F401
    import librosa.onset  # noqa: F401
    import pyloudnorm  # noqa: F401
    startup = time.perf_counter() - t0
    fn = STYLES[style]
    per_track, values = [], []
    t1 = time.perf_counter()
    for p in paths:
        s = time.perf_counter()
        values.append(fn(p))
        per_track.append(time.perf_counter() - s)
    print(json.dumps({"startup_s": startup, "compute_s": time.perf_counter() - t1,
                      "per_track_s": per_track, "values": values}))


# =================================================================================================
# measurement plumbing
# =================================================================================================
_WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss,
                  "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr[-3000:]}))
"""


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``cmd`` under a fresh wrapper process: wall s, CPU s and peak RSS (KiB) of its process
    tree, and ``others_cpu``: CPU seconds that other processes of the machine used meanwhile
    (the machine may be shared; a run with much of it is disturbed)."""
    busy = machine_busy_s()
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True,
                         env=env, check=True)
    r = json.loads(out.stdout)
    r["others_cpu"] = max(0.0, machine_busy_s() - busy - r["cpu"])
    if r["rc"] not in (0, 1):
        sys.exit(f"failed ({r['rc']}): {' '.join(cmd)}\n{r['stderr']}")
    return r


def default_env() -> dict[str, str]:
    """The environment with every thread-count variable removed (library defaults)."""
    env = dict(os.environ)
    for k in THREAD_VARS:
        env.pop(k, None)
    return env


def find_tracks(roots: list[Path]) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        files += sorted(p for p in root.rglob("full_mix.*") if not p.name.startswith("."))
    return files


def pick(files: list[Path], n: int) -> list[Path]:
    """``n`` tracks spread evenly over the sorted list (deterministic, mixes short and long tracks)."""
    if n >= len(files):
        return files
    return [files[(i * len(files)) // n] for i in range(n)]


def durations(files: list[Path]) -> list[float]:
    import soundfile as sf

    return [sf.info(str(f)).duration for f in files]


def make_dataset(files: list[Path], dest: Path) -> Path:
    """A dataset of symlinks ``dest/<i>-<track>/full_mix.<ext>`` to ``files``."""
    for i, f in enumerate(files):
        d = dest / f"{i:03d}-{f.parent.name}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f.name).symlink_to(f.resolve())
    return dest


def clear_sidecars(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file() and (p.suffix == ".INFO" or p.name.startswith(".mirflow")):
            p.unlink()


def mirflow_cmd(dataset: Path, workers: int, executor: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "mirflow", "run", str(dataset), "-a", ANALYZERS, "--json"]
    return cmd + (["--executor", executor] if executor else ["--workers", str(workers)])


def run_mirflow(dataset: Path, workers: int, executor: str | None = None) -> dict:
    clear_sidecars(dataset)
    r = measure(mirflow_cmd(dataset, workers, executor))
    summary = json.loads(r["stdout"])
    failed = sum(a["failed"] for a in summary["analyzers"].values())
    done = {k: a["done"] for k, a in summary["analyzers"].items()}
    r.update(analyzer_s={k: a["seconds"] for k, a in summary["analyzers"].items()},
             failed=failed, done=done)
    return r


def run_style(style: str, files: list[Path]) -> dict:
    r = measure([sys.executable, __file__, "--child", style, *map(str, files)], env=default_env())
    r.update(json.loads(r["stdout"].strip().splitlines()[-1]))
    return r


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in
                     subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                     if line.startswith("Model name"))
    except (StopIteration, OSError):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def build_long_track(sources: list[Path], seconds: float, dest: Path) -> Path:
    """A ``seconds``-long stereo FLAC at 44.1 kHz made of ``sources`` concatenated (looped)."""
    import numpy as np
    import soundfile as sf

    from mirflow.core.audio import decode, resample, to_stereo

    need = int(round(seconds * 44100))
    parts, have = [], 0
    while have < need:
        for s in sources:
            a = decode(s)
            x = resample(to_stereo(a.samples), a.sr, 44100)
            parts.append(x[:, : need - have])
            have += parts[-1].shape[1]
            if have >= need:
                break
    out = dest / "long_600s" / "full_mix.flac"
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out), np.concatenate(parts, axis=1).T, 44100, subtype="PCM_16")
    return out


def stages(path: Path, style_a: bool = True) -> None:
    """Where the time and memory go on one track: mirflow's stages as a worker runs them (every
    thread pool at 1), then (a)'s feature functions (default threads). CPU seconds (process time,
    which other jobs on a shared machine barely disturb), ms of CPU per second of audio, and the
    process's peak RSS after each stage (a stage that raises it holds the peak)."""
    from threadpoolctl import threadpool_limits

    t0 = time.process_time()
    import librosa  # noqa: F401
    import librosa.beat  # noqa: F401
    import librosa.onset  # noqa: F401

    from mirflow.analyzers.loudness import LoudnessAnalyzer
    from mirflow.analyzers.rhythm import RhythmAnalyzer
    from mirflow.analyzers.spectral import SpectralAnalyzer
    from mirflow.core.stft import shared_stft
    from mirflow.analyzers.tonal import TonalAnalyzer
    from mirflow.core.audio import TrackContext

    print(f"# imports (librosa, librosa.beat/onset: numba compiles at import): "
          f"{time.process_time() - t0:.2f} s CPU, peak RSS {_rss_mib():.0f} MiB")
    secs = durations([path])[0]
    print(f"# {path} ({secs:.0f} s)")
    print("| stage | CPU s | ms CPU per audio s | peak RSS after, MiB |")
    print("|---|---|---|---|")
    with threadpool_limits(1):
        for rep in range(2):  # the first pass includes first-call (numba JIT) costs
            ctx = TrackContext(path)
            steps = [("decode (soundfile) + channels-first copy", lambda: ctx.audio),
                     ("loudness analyzer (K-weighting, gating, 4x true peak)",
                      lambda: LoudnessAnalyzer().analyze(ctx)),
                     ("mono + resample to 22.05 kHz (soxr HQ)", lambda: ctx.mono(22050)),
                     ("STFT magnitude (2048/512)", lambda: shared_stft(ctx)),
                     ("spectral analyzer (rest)", lambda: SpectralAnalyzer().analyze(ctx)),
                     ("tonal analyzer (rest)", lambda: TonalAnalyzer().analyze(ctx)),
                     ("rhythm analyzer (rest)", lambda: RhythmAnalyzer().analyze(ctx))]
            total = 0.0
            for label, fn in steps:
                c = time.process_time()
                fn()
                dt = time.process_time() - c
                total += dt
                print(f"| {'' if rep else '(first pass) '}{label} | {dt:.3f} | {1000 * dt / secs:.2f} | "
                      f"{_rss_mib():.0f} |")
            print(f"| **{'' if rep else '(first pass) '}total per track** | {total:.3f} | "
                  f"{1000 * total / secs:.2f} | |")
            del ctx
    if style_a:
        print("| (a) feature function (default threads) | CPU s | ms CPU per audio s | wall s |")
        print("|---|---|---|---|")
        total = 0.0
        for f in ORIGINAL_FEATURES:
            c, w = time.process_time(), time.perf_counter()
            f(str(path))
            dt = time.process_time() - c
            total += dt
            print(f"| {f.__name__} | {dt:.3f} | {1000 * dt / secs:.2f} | {time.perf_counter() - w:.3f} |")
        print(f"| **total (a)** | {total:.3f} | {1000 * total / secs:.2f} | |")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# =================================================================================================
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", action="append", type=Path,
                    help=f"corpus root (repeatable; default {DEFAULT_CORPUS})")
    ap.add_argument("--tracks", type=int, default=8, help="tracks spread over the corpus (default 8)")
    ap.add_argument("--all", action="store_true", help="every track of the corpus")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repetitions (min reported)")
    ap.add_argument("--configs", default="a,b,c,d")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers of (d)")
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS on a 600 s track")
    ap.add_argument("--json", type=Path, help="write the raw measurements here")
    ap.add_argument("--stages", type=Path, metavar="AUDIO",
                    help="only break one file down: CPU and peak RSS per stage (mirflow and (a))")
    ap.add_argument("--no-a", action="store_true", help="with --stages: skip (a)'s functions")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.paths)
        return
    if args.stages:
        stages(args.stages, style_a=not args.no_a)
        return

    roots = args.corpus or [Path(DEFAULT_CORPUS)]
    all_files = find_tracks(roots)
    if not all_files:
        sys.exit(f"no full_mix.* under {roots}; build it with make corpus (../shared/corpus/real-music.sh)")
    files = all_files if args.all else pick(all_files, args.tracks)
    secs = durations(files)
    audio_s = sum(secs)
    n = len(files)
    configs = args.configs.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="mirflow-cpu-bench-"))
    raw: dict = {"tracks": [str(f) for f in files], "durations_s": secs, "runs": {}}
    try:
        ds = make_dataset(files, tmp / "ds")
        all_secs = dict(zip(all_files, durations(all_files)))
        shortest = min(all_files, key=all_secs.__getitem__)
        tiny = make_dataset([shortest], tmp / "tiny")
        print(f"# {time.strftime('%Y-%m-%d %H:%M')} | {machine()} | Python {platform.python_version()}"
              f" | load average {os.getloadavg()[0]:.1f} at start")
        print(f"# {n} tracks, {audio_s / 60:.1f} min of audio (shortest {min(secs):.0f} s, longest "
              f"{max(secs):.0f} s); OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
        print("#  " + ", ".join(f"{f.parent.name} {d:.0f}s" for f, d in zip(files, secs)), flush=True)
        runs: dict[str, list[dict]] = {c: [] for c in configs}
        runs["startup-1"], runs[f"startup-{args.workers}"] = [], []
        for rep in range(args.repeat):
            for c in configs:
                t = time.perf_counter()
                if c in STYLES:
                    r = run_style(c, files)
                else:
                    r = run_mirflow(ds, 1 if c == "c" else args.workers)
                    if r["failed"] or any(v != n for v in r["done"].values()):
                        print(f"#   WARNING ({c}): done {r['done']}, failed {r['failed']}")
                r.pop("stdout", None)
                runs[c].append(r)
                extra = (f" (start-up {r['startup_s']:.1f} s, compute {r['compute_s']:.1f} s)"
                         if c in STYLES else f" (analyzer s {r['analyzer_s']})")
                print(f"#   rep {rep + 1} ({c}): wall {r['wall']:.1f} s, cpu {r['cpu']:.1f} s, "
                      f"other jobs' CPU {r['others_cpu']:.1f} s{extra}", flush=True)
            if "c" in configs or "d" in configs:
                for w in (1, args.workers):
                    runs[f"startup-{w}"].append(run_mirflow(tiny, w))
        raw["runs"] = runs

        def best(c: str, key: str = "wall") -> float:
            return min(r[key] for r in runs[c])

        labels = {"a": "(a) seed original: 9 librosa.load per track, serial",
                  "b": "(b) seed serial loop: 1 load per module (4) per track",
                  "c": "(c) mirflow run --workers 1",
                  "d": f"(d) mirflow run --workers {args.workers}"}
        print()
        print("| configuration | wall s (min) | all reps | s/track | realtime x | CPU s | "
              "other jobs' CPU s in the min run | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for c in configs:
            w = best(c)
            quiet = min(runs[c], key=lambda r: r["wall"])
            reps = " / ".join(f"{r['wall']:.1f}" for r in runs[c])
            print(f"| {labels[c]} | {w:.1f} | {reps} | {w / n:.2f} | {audio_s / w:.0f} | "
                  f"{best(c, 'cpu'):.1f} | {quiet['others_cpu']:.1f} | "
                  f"{max(r['maxrss_kib'] for r in runs[c]) / 1024:.0f} |")
        for c in configs:
            if c in STYLES:
                comp = min(r["compute_s"] for r in runs[c])
                print(f"# ({c}) without start-up: {comp:.1f} s = {comp / n:.2f} s/track, "
                      f"realtime {audio_s / comp:.0f}x; start-up {min(r['startup_s'] for r in runs[c]):.1f} s")
        for w in (1, args.workers):
            if runs[f"startup-{w}"]:
                print(f"# mirflow fixed cost (one {all_secs[shortest]:.1f} s track, --workers {w}): "
                      f"{best(f'startup-{w}'):.1f} s wall, {best(f'startup-{w}', 'cpu'):.1f} s CPU")
        print()
        pairs = [("d", "a"), ("c", "a"), ("d", "b"), ("c", "b"), ("b", "a")]
        sp = [f"{x}/{y} = {best(y) / best(x):.1f}x" for x, y in pairs if x in runs and y in runs]
        print("Speedups (wall, min over repetitions; goal d/a >= 8x): " + ", ".join(sp))
        for c in configs:
            ws = [r["wall"] for r in runs[c]]
            if len(ws) > 1:
                print(f"#   noise ({c}): walls {', '.join(f'{x:.1f}' for x in ws)} "
                      f"(spread {100 * (max(ws) - min(ws)) / min(ws):.0f} %)")

        if args.memory:
            mem = tmp / "mem"
            sources = sorted(all_files, key=lambda f: -all_secs[f])[:3]
            long = build_long_track(sources, 600.0, mem)
            names = ", ".join(s.parent.name for s in sources)
            print(f"\n# peak memory on a {durations([long])[0]:.0f} s stereo 44.1 kHz FLAC "
                  f"({long.stat().st_size / 2**20:.0f} MiB) built from {names}")
            raw["memory"] = {}
            for label, w, ex in (("--workers 1", 1, None), ("--executor serial", 1, "serial")):
                r = run_mirflow(mem, w, ex)
                raw["memory"][label] = r["maxrss_kib"]
                mib = r["maxrss_kib"] / 1024
                print(f"#   mirflow run {label}: peak RSS {mib:.0f} MiB "
                      f"({'under' if mib < 1024 else 'OVER'} the 1 GiB budget; wall {r['wall']:.1f} s, "
                      f"failed {r['failed']})")
        if args.json:
            args.json.write_text(json.dumps(raw, indent=1, default=str))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
