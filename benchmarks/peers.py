"""HTDemucs separation in fp32 on the CPU: `mirflow run` against the tools a user would run instead.

    python benchmarks/peers.py [--corpus corpus/orchestral] [--clips 4] [--seconds 30] [--repeat 2]
        [--variants mirflow,mirflow-one-worker,apply-loop,onnx-loop,onnx-cli,demucs-cli]
        [--json out.json]

Issue 14 item 2 asks mirflow to be the fastest separation in fp32 too, without the memory of the
ONNX Runtime peer. Every variant is a whole process (or, for the per-file commands, one process per
file, as a shell loop runs them) on the same clips, interleaved round by round (``--repeat``), with
the same model: the full-size ``htdemucs`` architecture with random weights
(``benchmarks/separation.py``; speed does not depend on the weight values), shifts 0, overlap 0.25,
7.8 s segments, fp32, on the CPU:

* ``mirflow``: ``mirflow run DATASET -a separation --sep-precision fp32 --device cpu`` with its
  defaults otherwise (local executor, one worker per core, elastic threads), stems written as FLAC.
* ``mirflow-one-worker``: the same with ``-j 1 --cores N`` (N: this machine's cores): one worker
  process, so one copy of the model, running its passes on every core.
* ``apply-loop``: Demucs' own API the way the seed's optimized design uses it: the model loaded
  once, then per file decode, ``demucs.apply.apply_model``, stems written as FLAC; torch at the
  machine's cores.
* ``onnx-loop``: `demucs-onnx <https://pypi.org/project/demucs-onnx/>`_ (ONNX Runtime, no
  PyTorch at run time) in one process: ``demucs_onnx.separate(file, out, model="htdemucs",
  providers="cpu")`` per file, its session pool keeping the model loaded; stems written as WAV.
* ``onnx-cli``: ``demucs-onnx separate FILE OUT --model htdemucs --providers cpu`` per file.
* ``demucs-cli``: ``python -m demucs -n MODEL --repo REPO --shifts 0 --overlap 0.25`` per file (WAV: Demucs
  writes FLAC only through an installed ffmpeg).

demucs-onnx is exported from the same random-weight model with its own exporter
(``demucs_onnx.export.export_to_onnx``, which checks the ONNX graph against PyTorch) and placed
in a private, offline Hugging Face cache, so its unmodified download path finds it. Install it
with ``pip install demucs-onnx`` (its run-time dependencies are mirflow's); without it, the two
``onnx-*`` variants are skipped with a message.

Reported per run: wall seconds, CPU seconds (user + system of the whole process tree), x realtime
(audio seconds / wall seconds, start-up and model loads included), and the peak of the process
tree's summed PSS (proportional set size: memory shared between processes counted once, so
mirflow's several workers are compared fairly with one process) and of its largest process's RSS,
sampled every 0.1 s. The table shows each variant's best round by wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clips import best_by_wall, children_cpu, record  # noqa: E402
from lane_memory import TreeSampler  # noqa: E402
from separation import MODEL_NAME, SOURCES, clean, full_size_repo, make_clips  # noqa: E402
from streaming import SEED_LOOP  # noqa: E402

VARIANTS = ("mirflow", "mirflow-one-worker", "apply-loop", "onnx-loop", "onnx-cli", "demucs-cli")
#: The Hugging Face repository and file demucs-onnx downloads its single-file htdemucs from.
ONNX_REPO, ONNX_FILE = "StemSplitio/htdemucs-onnx", "htdemucs.onnx"

#: demucs-onnx in one process: argv = output folder, the mixes.
ONNX_LOOP = ("import sys\n"
             "from pathlib import Path\n"
             "import demucs_onnx\n"
             "for mix in sys.argv[2:]:\n"
             "    demucs_onnx.separate(mix, Path(mix).parent / sys.argv[1], model='htdemucs',\n"
             "                         providers='cpu', progress=False)\n")


def measure(commands: list[list[str]], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``commands`` one after another (each a whole process): wall and CPU seconds, and the
    peak PSS of each command's process tree (the largest over the commands) and of its largest
    process's RSS, in MiB."""
    c0, t0 = children_cpu(), time.perf_counter()
    peak_pss = peak_single = 0
    for cmd in commands:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        sampler = TreeSampler(proc.pid)
        out, err = proc.communicate()
        sampler.stop()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
        peak_pss = max(peak_pss, sampler.peak_pss)
        peak_single = max(peak_single, sampler.peak_single)
    return {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(children_cpu() - c0, 1),
            "peak_pss_mib": round(peak_pss / 2**20), "peak_process_rss_mib": round(peak_single / 2**20)}


def export_onnx(repo_model, work: Path) -> Path:
    """Export ``repo_model`` with demucs-onnx's own exporter into a private offline Hugging Face
    cache laid out as its download expects; returns the cache folder."""
    import torch
    from demucs_onnx.export import export_to_onnx

    whole = work / "htdemucs_random.th"
    torch.save(repo_model, whole)  # the exporter loads a whole pickled model from a path
    commit = "0" * 40
    cache = work / "hf-cache"
    folder = cache / f"models--{ONNX_REPO.replace('/', '--')}"
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    t0 = time.perf_counter()
    export_to_onnx(whole, folder / "snapshots" / commit / ONNX_FILE, verbose=False)
    print(f"demucs-onnx export (parity-checked by its exporter): {time.perf_counter() - t0:.1f} s")
    whole.unlink()
    return cache


def commands(variant: str, clips: list[Path], dataset: Path, repo: Path) -> list[list[str]]:
    """The process(es) of one variant over ``clips``."""
    py = sys.executable
    if variant.startswith("mirflow"):
        one = ["-j", "1", "--cores", str(os.cpu_count() or 1)] if variant == "mirflow-one-worker" else []
        return [[py, "-m", "mirflow", "run", str(dataset), "-a", "separation", "--sep-repo", str(repo),
                 "--sep-model", MODEL_NAME, "--sep-precision", "fp32", "--device", "cpu",
                 "--force", "all", "--json", *one]]
    if variant == "apply-loop":
        return [[py, "-c", SEED_LOOP, str(Path(__file__).resolve().parent), str(os.cpu_count() or 1),
                 str(dataset), str(repo), "fp32"]]
    if variant == "onnx-loop":
        return [[py, "-c", ONNX_LOOP, "onnx_out", *map(str, clips)]]
    if variant == "onnx-cli":
        cli = str(Path(py).with_name("demucs-onnx"))
        return [[cli, "separate", str(mix), str(mix.parent / "onnx_out"), "--model", "htdemucs",
                 "--providers", "cpu", "-q"] for mix in clips]
    if variant == "demucs-cli":
        return [[py, "-m", "demucs", "-n", MODEL_NAME, "--repo", str(repo), "-d", "cpu", "--shifts", "0",
                 "--overlap", "0.25", "-o", str(mix.parent / "demucs_out"), str(mix)]
                for mix in clips]
    raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def check_outputs(variant: str, clips: list[Path]) -> None:
    """Fail loudly when a variant did not write four stems per clip (a silent no-op would win)."""
    found = sum(1 for mix in clips for p in mix.parent.rglob("*")
                if p.is_file() and p != mix and p.stem in SOURCES)
    if found < len(SOURCES) * len(clips):
        raise SystemExit(f"{variant}: {found} stem files for {len(clips)} clips")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus/orchestral"))
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    try:
        import demucs_onnx  # noqa: F401
    except ImportError:
        skipped = [v for v in variants if v.startswith("onnx")]
        if skipped:
            print(f"demucs-onnx is not installed (pip install demucs-onnx): skipping {', '.join(skipped)}")
        variants = [v for v in variants if not v.startswith("onnx")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = full_size_repo(work / "repo")
        dataset = work / "dataset"
        clips = make_clips(args.corpus, dataset, args.clips, args.seconds)
        env = dict(os.environ)
        if any(v.startswith("onnx") for v in variants):
            from demucs.pretrained import get_model

            model = get_model(MODEL_NAME, repo=repo).models[0]
            env.update(HF_HUB_CACHE=str(export_onnx(model, work)), HF_HUB_OFFLINE="1")
        load_start = os.getloadavg()
        for rep in range(args.repeat):
            for variant in (variants if rep % 2 == 0 else variants[::-1]):
                clean(clips)
                row = {"variant": variant, "repeat": rep,
                       **measure(commands(variant, clips, dataset, repo), env),
                       "load_avg_1m": round(os.getloadavg()[0], 1)}
                check_outputs(variant, clips)
                row["x_realtime"] = round(args.clips * args.seconds / row["wall_s"], 2)
                print(json.dumps(row), flush=True)
                rows.append(row)
    out = record("peers.py", rows, load_start, clips=args.clips, seconds=args.seconds)
    print(table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def table(out: dict) -> str:
    """Markdown: each variant's best round by wall time, and its wall time over mirflow's."""
    best = best_by_wall(out["rows"], lambda r: r["variant"])
    ref = best.get("mirflow", {}).get("wall_s")
    lines = [f"Best of {max(r['repeat'] for r in out['rows']) + 1}, {out['clips']} x {out['seconds']:g} s, "
             f"load average {out['load_avg_start'][0]:.1f} -> {out['load_avg_end'][0]:.1f}", "",
             "| variant | wall s | CPU s | x realtime | peak PSS of the tree MiB | largest process RSS MiB "
             "| wall / mirflow's | all rounds, wall s |", "|---|---|---|---|---|---|---|---|"]
    for variant, r in best.items():
        runs = ", ".join(f"{x['wall_s']:.1f}" for x in out["rows"] if x["variant"] == variant)
        ratio = f"{r['wall_s'] / ref:.2f}" if ref else ""
        lines.append(f"| {variant} | {r['wall_s']:.1f} | {r['cpu_s']:.0f} | {r['x_realtime']:.2f} | "
                     f"{r['peak_pss_mib']} | {r['peak_process_rss_mib']} | {ratio} | {runs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
