"""Test helpers: a tiny HTDemucs saved as a local Demucs model repository.

No weights can be downloaded in the tests, so they build an ``HTDemucs`` of the released
architecture family with a handful of channels, depth 2, a 1 s training segment and a 512-point STFT,
and save it in the layout ``demucs.pretrained.get_model(name, repo=DIR)`` loads: one
``<signature>-<checksum>.th`` package per model and a ``<name>.yaml`` bag listing the signatures.
"""

from __future__ import annotations

import hashlib
import io
from fractions import Fraction
from pathlib import Path

import numpy as np

SOURCES = ["drums", "bass", "other", "vocals"]
SR = 44100


def tiny_htdemucs(*, sources: list[str] | None = None, seed: int = 0, segment: float = 1.0):
    """A small ``HTDemucs`` (a few thousand parameters) with deterministic random weights, in eval mode."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    model = HTDemucs(sources=list(sources or SOURCES), channels=4, depth=2, nfft=512, t_layers=1,
                     t_heads=1, t_hidden_scale=1.0, dconv_comp=2,
                     segment=Fraction(segment).limit_denominator(100), samplerate=SR)
    return model.eval()


def save_model(model, folder: Path, sig: str) -> Path:
    """Save ``model`` as ``<sig>-<checksum>.th`` in ``folder`` (Demucs' package format)."""
    import torch

    args, kwargs = model._init_args_kwargs
    package = {"klass": type(model), "args": args, "kwargs": kwargs,
               "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    buf = io.BytesIO()
    torch.save(package, buf)
    checksum = hashlib.sha256(buf.getvalue()).hexdigest()[:8]
    path = Path(folder) / f"{sig}-{checksum}.th"
    path.write_bytes(buf.getvalue())
    return path


def save_repo(folder: Path, name: str, models: list, *, sigs: list[str] | None = None,
              weights: list[list[float]] | None = None) -> Path:
    """Write a local Demucs repo holding the bag ``name`` made of ``models``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sigs = sigs or [f"{0xabc00000 + i:08x}" for i in range(len(models))]
    for model, sig in zip(models, sigs):
        save_model(model, folder, sig)
    lines = [f"models: [{', '.join(repr(s) for s in sigs)}]"]
    if weights is not None:
        lines.append(f"weights: {weights!r}")
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return folder


def clip(seconds: float, *, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A synthetic stereo clip ``(2, n)`` float32: a bass tone, a melody, clicks and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 55.0 * (1 + seed % 5)
    bass = 0.3 * np.sin(2 * np.pi * f0 * t)
    melody = 0.2 * np.sin(2 * np.pi * 440.0 * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t)) * t)
    clicks = np.zeros_like(t)
    clicks[:: sr // 2] = 0.8
    noise = 0.02 * rng.standard_normal((2, t.size))
    left = bass + melody + clicks
    right = bass + 0.5 * melody + clicks
    return (np.stack([left, right]) + noise).astype(np.float32)


def save_hf_snapshot(cache: Path, name: str, models: list, sigs: list[str], *,
                     namespace: str = "adefossez", repo_name: str | None = None) -> Path:
    """Lay out a Hugging Face hub cache entry as ``huggingface_hub`` does for Demucs 4.1's
    ``get_hf_model``: ``models--<ns>--<repo>/blobs/<etag>`` (SHA-256 for the weights, which the hub
    keeps in Git LFS; the Git blob id for the YAML) and ``snapshots/<commit>/<file>`` links to them.
    The weights are safetensors with the class and init arguments in the metadata, as
    ``demucs.hf.load_safetensors_model`` reads them. Returns the snapshot folder."""
    import json
    from fractions import Fraction

    from safetensors.torch import save_file

    def encode(value):
        if isinstance(value, Fraction):
            return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        return value

    root = Path(cache) / f"models--{namespace}--{repo_name or name}"
    blobs, snap = root / "blobs", root / "snapshots" / ("0" * 40)
    blobs.mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)

    def place(file_name: str, data: bytes, etag: str) -> None:
        (blobs / etag).write_bytes(data)
        (snap / file_name).symlink_to(Path("..") / ".." / "blobs" / etag)

    for model, sig in zip(models, sigs):
        args, kwargs = model._init_args_kwargs
        tmp = Path(cache) / f".{sig}.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"klass": f"{type(model).__module__}.{type(model).__name__}",
                            "args": json.dumps(encode(list(args))), "kwargs": json.dumps(encode(kwargs))})
        data = tmp.read_bytes()
        tmp.unlink()
        place(f"{sig}.safetensors", data, hashlib.sha256(data).hexdigest())
    bag = f"models: [{', '.join(repr(s) for s in sigs)}]\n".encode()
    place(f"{name}.yaml", bag, hashlib.sha1(b"blob %d\0" % len(bag) + bag).hexdigest())
    return snap
