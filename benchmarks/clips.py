"""Helpers shared by the benchmarks: short datasets cut from the real corpus (``make corpus``), a
random-weight Demucs repository, the CPU time of finished child processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def build_dataset(corpus: Path, dest: Path, tracks: int, seconds: float) -> list[Path]:
    """``dest/<track>/full_mix.flac``: the first ``seconds`` of ``tracks`` corpus tracks spread
    evenly over the sorted corpus. Returns the mixes written."""
    files = sorted(corpus.glob("*/full_mix.*"))
    if not files:
        raise SystemExit(f"no tracks in {corpus} (build it with `make corpus`)")
    picked = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(tracks, len(files)))]
    out = []
    for f in picked:
        with sf.SoundFile(str(f)) as src:
            y = src.read(frames=int(seconds * src.samplerate), dtype="float32", always_2d=True)
            sr = src.samplerate
        folder = dest / f.parent.name
        folder.mkdir(parents=True)
        sf.write(folder / "full_mix.flac", y, sr)
        out.append(folder / "full_mix.flac")
    return out


def save_demucs_repo(model, folder: Path, signature: str, name: str) -> Path:
    """Save a Demucs ``model`` (random weights are enough for speed) as a local Demucs repository:
    ``folder/<signature>-<sha256[:8]>.th`` (Demucs' naming, checked on load) and ``folder/<name>.yaml``
    naming it as a one-model bag; returns ``folder``."""
    import hashlib
    import io

    import torch

    args, kwargs = model._init_args_kwargs
    buf = io.BytesIO()
    torch.save({"klass": type(model), "args": args, "kwargs": kwargs, "state": model.state_dict()}, buf)
    checksum = hashlib.sha256(buf.getvalue()).hexdigest()[:8]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{signature}-{checksum}.th").write_bytes(buf.getvalue())
    (folder / f"{name}.yaml").write_text(f"models: ['{signature}']\n")
    return folder


def children_cpu() -> float:
    """User + system CPU seconds of this process's finished (waited-for) children, for the CPU time
    of a variant run as a subprocess: take the difference around the run."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def source_trees(items: list[str]) -> list[tuple[str, Path | None]]:
    """``--src LABEL=DIR`` options as ``[("current", None), (LABEL, DIR), ...]``: the installed tree
    first, then each source tree to run with ``PYTHONPATH=DIR/src`` (see :func:`tree_env`)."""
    trees: list[tuple[str, Path | None]] = [("current", None)]
    for item in items:
        label, _, folder = item.partition("=")
        if not folder or not Path(folder, "src").is_dir():
            raise SystemExit(f"--src {item!r}: expected LABEL=DIR with DIR/src")
        trees.append((label, Path(folder)))
    return trees


def tree_env(src: Path | None, **extra: str) -> dict[str, str]:
    """This process's environment, with ``PYTHONPATH=src/src`` first when ``src`` is given, and
    ``extra`` variables."""
    import os

    env = dict(os.environ, **extra)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src / "src"), env.get("PYTHONPATH")]))
    return env


def best_by_wall(rows: list[dict], key) -> dict:
    """``{key(row): row}`` keeping each key's row of the lowest ``wall_s`` (best of interleaved
    repeats: on a shared machine the fastest run is the one least disturbed)."""
    best: dict = {}
    for r in rows:
        k = key(r)
        if k not in best or r["wall_s"] < best[k]["wall_s"]:
            best[k] = r
    return best


def record(script: str, rows: list[dict], load_start: tuple[float, float, float], **fields) -> dict:
    """A benchmark's JSON record: date (UTC), machine, cores, load averages at the start and now,
    the command that ran (``script`` and this process's arguments), ``fields`` and the ``rows``."""
    import datetime
    import os
    import platform
    import sys

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.platform(), "cpus": os.cpu_count(), **fields,
            "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
            "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]), "rows": rows}


def mirflow_cli(args: list[str], env: dict[str, str]):
    """``python -m mirflow ARGS`` with ``env``: ``(CompletedProcess, wall seconds)``."""
    import subprocess
    import sys
    import time

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mirflow", *args], capture_output=True, text=True,
                          env=env)
    return proc, time.perf_counter() - t0


def json_of(proc, what: str) -> dict:
    """The JSON a ``mirflow ... --json`` process printed; exits naming ``what`` when there is none."""
    import json

    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"{what} gave no JSON (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
