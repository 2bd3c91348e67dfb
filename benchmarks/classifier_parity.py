"""Classifier input parity on real files: mirflow's 16 kHz view and scores vs Essentia's documented
inference pipeline, ``MonoLoader(filename, sampleRate=16000, resampleQuality=4)``.

For every audio file under the given folders (default: the development set,
``../shared/eval/annotated`` relative to the repository root) it reports

- the largest sample difference between ``MonoLoader``'s output and mirflow's 16 kHz view, with
  the default ``resampler="linear"`` and with ``resampler="soxr"``;
- the difference of a probe classifier's track score (mean over patches) between the two inputs:
  the probe is a seeded 64 -> 16 -> 1 tanh/sigmoid network on each patch's mean log-mel frame, so
  its output is a known, smooth function of the log-mel patches, like a real classifier head;
- with ``--models DIR`` (in an environment with ``essentia-tensorflow``, e.g. ``.venv-tf``; DIR
  holds ``danceability-vggish-audioset-1.pb``, e.g. the full-size VGGish with random weights built
  by ``benchmarks/classifiers.py --stage build``): the ``danceability`` score of mirflow's
  ``classifiers`` analyzer (its own decode, 16 kHz view, numpy front end, ``--backend``) against
  Essentia's documented pipeline, ``TensorflowPredictVGGish(graphFilename=..., output=
  "model/Sigmoid")`` on the ``MonoLoader`` signal, with both resamplers.

Usage::

    python benchmarks/classifier_parity.py [FOLDER ...] [--models DIR [--backend essentia]]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO.parent / "shared" / "eval" / "annotated"
AUDIO = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aiff", ".aif"}


def probe_score(signal: np.ndarray) -> float:
    """Mean over patches of a seeded network of each patch's mean log-mel frame (0-1)."""
    from mirflow.models import vggish

    p = vggish.patches(signal).astype(np.float64)
    if len(p) == 0:
        return float("nan")
    rng = np.random.default_rng(7)
    w1, b1 = rng.normal(0, 0.3, (64, 16)), rng.normal(0, 0.1, 16)
    w2 = rng.normal(0, 0.5, 16)
    h = np.tanh(p.mean(axis=1) @ w1 + b1)
    return float(np.mean(1.0 / (1.0 + np.exp(-(h @ w2)))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="*", type=Path)
    ap.add_argument("--models", type=Path,
                    help="folder with danceability-vggish-audioset-1.pb (and .onnx for --backend onnx)")
    ap.add_argument("--backend", default="essentia", help="mirflow classifier backend for --models")
    args = ap.parse_args(argv)

    import essentia
    import essentia.standard as es

    from mirflow.core.audio import TrackContext

    essentia.log.infoActive = False
    files = sorted(f for d in (args.folders or [DEFAULT]) for f in Path(d).rglob("*")
                   if f.suffix.lower() in AUDIO)
    model = analyzers = None
    if args.models:
        from mirflow.analyzers.classifiers import ClassifiersAnalyzer

        pb = args.models / "danceability-vggish-audioset-1.pb"
        model = es.TensorflowPredictVGGish(graphFilename=str(pb), output="model/Sigmoid")
        analyzers = {r: ClassifiersAnalyzer(models_dir=str(args.models), backend=args.backend,
                                            resampler=r) for r in ("linear", "soxr")}
        for a in analyzers.values():
            a.setup("cpu")
    print("command: python benchmarks/classifier_parity.py " + " ".join(argv or sys.argv[1:]))
    print("\n| file | native | max sample diff linear | max sample diff soxr | probe score diff "
          "linear | probe score diff soxr |" + (" VGGish score | diff linear | diff soxr |"
                                                  if model else ""))
    print("|---|---|---|---|---|---|" + ("---|---|---|" if model else ""))
    worst = {"linear": 0.0, "soxr": 0.0, "vl": 0.0, "vs": 0.0}
    for f in files:
        ref = es.MonoLoader(filename=str(f), sampleRate=16000, resampleQuality=4)()
        ctx = TrackContext(f)
        row = [f"{f.parent.name}/{f.name}", f"{ctx.sr} Hz {ctx.audio.channels} ch"]
        views = {r: ctx.mono(16000, resampler=r) for r in ("linear", "soxr")}
        for r, v in views.items():
            m = min(v.size, ref.size)
            d = float(np.abs(v[:m] - ref[:m]).max()) if m else 0.0
            row.append(f"{d:.1e}" + ("" if v.size == ref.size else f" (len {v.size - ref.size:+d})"))
        want = probe_score(ref)
        for r, v in views.items():
            d = abs(probe_score(v) - want)
            worst[r] = max(worst[r], d)
            row.append(f"{d:.5f}")
        if model is not None:
            ess = float(np.asarray(model(ref))[:, 0].mean())
            row.append(f"{ess:.4f}")
            for r, key in (("linear", "vl"), ("soxr", "vs")):
                ours = analyzers[r].analyze(TrackContext(f))["danceability"]
                d = abs(ours - ess)
                worst[key] = max(worst[key], d)
                row.append(f"{d:.5f}")
        print("| " + " | ".join(row) + " |")
    print(f"\nlargest probe score difference: linear {worst['linear']:.5f}, soxr {worst['soxr']:.5f}"
          + (f"; full-size VGGish, mirflow ({args.backend}) vs Essentia's pipeline: linear "
             f"{worst['vl']:.5f}, soxr {worst['vs']:.5f}" if model else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
