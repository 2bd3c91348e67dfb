"""Stem separation throughput: Demucs subprocess per file vs model once vs mirflow's analyzer.

    python benchmarks/separation.py [--corpus corpus/orchestral] [--clips 4] [--seconds 10]
                                    [--precisions fp32,bf16] [--batches 1] [--skip-subprocess]
                                    [--skip-cli] [--workers 2] [--device cpu] [--json out.json]

Speed does not depend on weight values, so the model is the full-size ``htdemucs`` architecture
(``HTDemucs(sources=[drums, bass, other, vocals], bottom_channels=512)``, 41.5M parameters, 7.8 s
segments) with random weights, saved as a local Demucs repo so every path loads it offline, the
same way (``demucs.pretrained.get_model(name, repo=DIR)``).

Clips of ``--seconds`` are cut from the middle of the first ``--clips`` corpus tracks that are long
enough and written as ``<clip>/full_mix.flac`` in a temporary dataset. Compared, one after another
in one process run:

(a) the seed's original: ``python -m demucs`` in a subprocess per file (interpreter start, torch
    import and model load paid per file);
(b) the seed's optimized: model loaded once, then per file: decode, ``apply_model``, write stems
    (FLAC 16-bit with soundfile), serially; fp32 and, for reference, bf16 autocast;
(c) mirflow: the ``separation`` analyzer, ``setup()`` once, then ``analyze_batch`` over all clips
    (decode ahead in threads, segments batched across tracks, stems written in writer threads,
    on the CPU torch's threads used as concurrent single-thread forward passes);
(c') the same through the real CLI, ``mirflow run DATASET -a separation --workers N`` (local
    executor: N worker processes, one thread each; includes start-up, N model loads, sidecars).

Every path uses shifts 0 and overlap 0.25 and standardises the mix as Demucs does. Reported:
seconds per track (model load excluded for (b) and (c), included for (a) and (c') since they pay
it inside the run), realtime factor (audio seconds per wall second), CPU seconds per track (user +
system of this process and its children: steadier than wall time on a shared machine), and the
difference of (c)'s stems in bf16 against fp32.
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
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

SOURCES = ["drums", "bass", "other", "vocals"]
MODEL_NAME = "htdemucs_random"


def full_size_repo(folder: Path, seed: int = 0) -> Path:
    """Save a full-size random-weight HTDemucs as the local Demucs repo bag ``htdemucs_random``."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    model = HTDemucs(sources=SOURCES, bottom_channels=512, segment=Fraction(39, 5))
    n_params = sum(p.numel() for p in model.parameters())
    from clips import save_demucs_repo  # benchmarks/ is on sys.path when run as a script

    save_demucs_repo(model, folder, "0badc0de", MODEL_NAME)
    print(f"model: HTDemucs full size, {n_params / 1e6:.1f}M parameters (random weights) in {folder}")
    return folder


def make_clips(corpus: Path, out: Path, n: int, seconds: float) -> list[Path]:
    from mirflow.core.audio import decode

    clips = []
    for src in sorted(corpus.glob("*/full_mix.*")):
        if len(clips) == n:
            break
        if sf.info(str(src)).duration < seconds + 2:
            continue
        audio = decode(src)
        start = max(0, audio.frames // 2 - int(seconds * audio.sr) // 2)
        piece = audio.samples[:, start:start + int(seconds * audio.sr)]
        folder = out / src.parent.name
        folder.mkdir(parents=True)
        sf.write(str(folder / "full_mix.flac"), piece.T, audio.sr)
        clips.append(folder / "full_mix.flac")
    if len(clips) < n:
        raise SystemExit(f"only {len(clips)} corpus tracks of at least {seconds + 2} s in {corpus}")
    return clips


def clean(clips: list[Path]) -> None:
    for mix in clips:
        for p in mix.parent.iterdir():
            if p != mix:
                p.unlink() if p.is_file() else shutil.rmtree(p)


def cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def run_cli(dataset: Path, repo: Path, precision: str, workers: int) -> float:
    """(c'): ``mirflow run`` with the local executor; returns wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mirflow", "run", str(dataset), "-a", "separation",
                           "--sep-repo", str(repo), "--sep-model", MODEL_NAME,
                           "--sep-precision", precision, "--workers", str(workers), "--json"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    summary = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    done = summary.get("analyzers", {}).get("separation", {}).get("done")
    if proc.returncode != 0 or not done:
        raise SystemExit(f"mirflow run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds


def run_subprocess(clips: list[Path], repo: Path, device: str) -> float:
    """(a): ``python -m demucs`` per file, like the seed's ``subprocess.run(['demucs', ...])``."""
    t0 = time.perf_counter()
    for mix in clips:
        subprocess.run([sys.executable, "-m", "demucs", "-n", MODEL_NAME, "--repo", str(repo),
                        "-d", device, "--shifts", "0", "--overlap", "0.25", "--flac",
                        "-o", str(mix.parent / "demucs_out"), str(mix)],
                       check=True, capture_output=True)
    return time.perf_counter() - t0


def run_model_once(clips: list[Path], repo: Path, device: str, precision: str) -> tuple[float, float]:
    """(b): model loaded once, ``apply_model`` per file, serially. Returns (load s, separation s)."""
    import contextlib

    import torch
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    from mirflow.core.audio import decode, resample, to_stereo

    t0 = time.perf_counter()
    model = get_model(MODEL_NAME, repo=repo).to(device).eval()
    load = time.perf_counter() - t0
    cast = (torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
            if precision == "bf16" else contextlib.nullcontext())
    t0 = time.perf_counter()
    for mix in clips:
        audio = decode(mix)
        wav = torch.from_numpy(resample(to_stereo(audio.samples), audio.sr, model.samplerate))
        ref = wav.mean(0)
        mean, std = ref.mean(), ref.std() + 1e-8
        with torch.no_grad(), cast:
            sources = apply_model(model, ((wav - mean) / std)[None], shifts=0, overlap=0.25,
                                  device=device)[0]
        sources = (sources.float() * std + mean).clamp(-1, 1).cpu().numpy()
        for name, stem in zip(model.sources, sources):
            sf.write(str(mix.parent / f"{name}.flac"), stem.T, model.samplerate, subtype="PCM_16")
    return load, time.perf_counter() - t0


def run_mirflow(clips: list[Path], repo: Path, device: str, precision: str,
                batch: int | None) -> tuple[float, float, str]:
    """(c): the separation analyzer over all clips. Returns (setup s, separation s, precision used)."""
    from mirflow.analyzers.separation import SeparationAnalyzer
    from mirflow.core.audio import TrackContext

    sep = SeparationAnalyzer(model=MODEL_NAME, repo=str(repo), precision=precision, batch=batch,
                     device=device)
    t0 = time.perf_counter()
    sep.setup(device)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = sep.analyze_batch([TrackContext(m) for m in clips])
    seconds = time.perf_counter() - t0
    bad = [r for r in results if isinstance(r, BaseException)]
    if bad:
        raise bad[0]
    sep.teardown()
    return load, seconds, results[0]["separation_precision"]


def read_stems(mix: Path) -> np.ndarray:
    return np.stack([sf.read(str(mix.parent / f"{s}.flac"), dtype="float32")[0] for s in SOURCES])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus/orchestral"))
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--batches", default="", help="mirflow --sep-batch values (default: per device)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-subprocess", action="store_true")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers for (c')")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from mirflow.models.precision import cpu_bf16_support

    work = Path(tempfile.mkdtemp(prefix="mirflow-sep-bench-"))
    try:
        repo = full_size_repo(work / "repo")
        clips = make_clips(args.corpus, work / "dataset", args.clips, args.seconds)
        audio_s = sum(sf.info(str(c)).duration for c in clips)
        bf16 = cpu_bf16_support()
        env = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
               "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "device": args.device, "cpu_bf16": bf16, "load_avg_start": os.getloadavg(),
               "clips": len(clips), "clip_seconds": args.seconds}
        print(json.dumps(env))
        rows: list[dict] = []

        def report(label: str, seconds: float, cpu: float, load: float = 0.0, **extra) -> None:
            row = {"path": label, "s_per_track": seconds / len(clips), "rtf": audio_s / seconds,
                   "cpu_s_per_track": cpu / len(clips), "load_s": load,
                   "load_avg": os.getloadavg()[0], **extra}
            rows.append(row)
            print(f"{label:36s} {row['s_per_track']:7.2f} s/track  {row['rtf']:6.2f}x realtime  "
                  f"{row['cpu_s_per_track']:7.2f} CPU s/track  (load {load:.1f} s, "
                  f"loadavg {row['load_avg']:.1f})", flush=True)

        if not args.skip_subprocess:
            clean(clips)
            c0 = cpu_seconds()
            secs = run_subprocess(clips, repo, args.device)
            report("(a) demucs subprocess/file fp32", secs, cpu_seconds() - c0)
        batches = [int(b) for b in args.batches.split(",") if b] or [None]
        stems: dict[str, np.ndarray] = {}
        for prec in args.precisions.split(","):
            clean(clips)
            c0 = cpu_seconds()
            load, secs = run_model_once(clips, repo, args.device, prec)
            report(f"(b) model once+apply_model {prec}", secs, cpu_seconds() - c0, load)
            for batch in batches:
                clean(clips)
                c0 = cpu_seconds()
                load, secs, used = run_mirflow(clips, repo, args.device, prec, batch)
                report(f"(c) mirflow analyzer {prec} batch={batch or 'auto'}", secs,
                       cpu_seconds() - c0, load, precision_used=used)
                stems[prec] = read_stems(clips[0])
            if not args.skip_cli:
                clean(clips)
                c0 = cpu_seconds()
                secs = run_cli(work / "dataset", repo, prec, args.workers)
                report(f"(c') mirflow run {prec} -j {args.workers}", secs, cpu_seconds() - c0)
        if "fp32" in stems and "bf16" in stems:
            ref = stems["fp32"]
            diff = float(np.abs(stems["bf16"] - ref).max() / np.abs(ref).max())
            rms = float(np.sqrt(np.mean((stems["bf16"] - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)))
            print(f"bf16 vs fp32 stems (clip 1): max |diff| / peak = {diff:.4f}, rms diff / rms = {rms:.4f}")
            env["bf16_vs_fp32"] = {"max_rel_peak": diff, "rms_rel": rms}
        env["load_avg_end"] = os.getloadavg()
        print(json.dumps({"load_avg_end": env["load_avg_end"]}))
        if args.json:
            args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
