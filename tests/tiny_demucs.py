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
