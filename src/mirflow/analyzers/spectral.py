"""Spectral shape descriptors of the mix, from the shared STFT.

Every value comes from the one magnitude STFT that :class:`~mirflow.core.audio.TrackContext` memoises for
the mono 22.05 kHz view (``n_fft=2048``, ``hop_length=512``, Hann window, centred frames: 93 ms
frames every 23.2 ms; see :mod:`mirflow.core.stft`); the tonal and rhythm analyzers reuse the same
matrix.

Features (each reported as ``<name>_mean`` and ``<name>_std``: mean and population standard deviation
over the non-silent frames)
----------------------------------------------------------------------------------------------------
- ``spectral_centroid`` (Hz, 0-11025): magnitude-weighted mean frequency of the frame
  (``librosa.feature.spectral_centroid``).
- ``spectral_bandwidth`` (Hz, >= 0): magnitude-weighted standard deviation of the frequency around
  the centroid (``librosa.feature.spectral_bandwidth``, ``p=2``).
- ``spectral_rolloff`` (Hz, 0-11025): lowest bin frequency below which 85 % of the frame's magnitude
  lies (``librosa.feature.spectral_rolloff``, ``roll_percent=0.85``).
- ``spectral_flatness`` (0-1, no unit): geometric over arithmetic mean of the power spectrum, power
  floored at 1e-10 (``librosa.feature.spectral_flatness``): near 0 for tones, near 1 for white noise.
- ``spectral_flux`` (0-1.414, no unit): Euclidean distance between consecutive magnitude spectra,
  each scaled to unit Euclidean norm, so it measures change of spectral *shape*, independent of
  level: 0 for a stationary sound, up to sqrt(2) for spectra with no bin in common. Taken over pairs
  of consecutive frames that are both non-silent.
- ``zero_crossing_rate`` (0-1, crossings per sample): fraction of sign changes of the mono 22.05 kHz
  signal in each 2048-sample frame, frames aligned with the STFT's
  (``librosa.feature.zero_crossing_rate``).

Silent frames
-------------
A frame is *silent* when its RMS level is below ``silence_db`` (default -60 dBFS). The level is
librosa's ``feature.rms`` computed from the magnitude STFT, i.e. the RMS of the Hann-windowed frame
(a full-scale sine reads about -7.3 dBFS, full-scale white noise about -4.3 dBFS). Silent frames
are left out of every mean and standard deviation, so intros, gaps and fade-outs of digital
silence do not drag the statistics towards 0. When every frame is silent (or the audio is empty),
all values are ``None`` and ``"_note"`` gives the reason.

The computation is vectorised over blocks of frames in float64, so its extra memory stays a few
MiB whatever the track length; the results match librosa's functions on the same STFT to about 1e-5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from ..core.audio import TrackContext
from ..core.stft import (BLOCK, SILENCE_DB, STFT_HOP, STFT_N_FFT, STFT_SR, active_frames, finite_or_none,
                         shared_stft, unusable_note)
from . import register
from .base import Analyzer, AnalyzerParams


# -- the features ----------------------------------------------------------------------------------
def spectral_frames(mag: np.ndarray, *, sr: int = STFT_SR, roll_percent: float = 0.85,
                    amin: float = 1e-10) -> dict[str, np.ndarray]:
    """Per-frame centroid, bandwidth, rolloff (Hz), flatness and flux of a magnitude STFT.

    ``mag`` is ``(bins, frames)``. Returns a dict of ``(frames,)`` float64 arrays; ``flux[t]`` is the
    distance between the unit-norm spectra of frames ``t - 1`` and ``t`` (``flux[0]`` is 0). Frames
    of all-zero magnitude give centroid, bandwidth and rolloff 0 (as librosa does), flatness 1, and
    a flux of 1 against any other frame.

    Frames are processed in contiguous float32 blocks: two passes for the bandwidth (deviation from
    the frame's own centroid, no cancellation), a two-level search for the rolloff (cumulative sums of
    32-bin groups, then within the one group that crosses the threshold) instead of a full
    cumulative sum, and float64 accumulators wherever a sum spans a whole frame.
    """
    bins, frames = mag.shape
    freqs = np.linspace(0.0, sr / 2.0, bins)
    freqs32 = freqs.astype(np.float32)
    out = {k: np.zeros(frames) for k in ("centroid", "bandwidth", "rolloff", "flatness", "flux")}
    group = 32
    prev_unit: np.ndarray | None = None
    for start in range(0, frames, BLOCK):
        block = np.ascontiguousarray(mag[:, start:start + BLOCK], dtype=np.float32)
        cols = block.shape[1]
        sl = slice(start, start + cols)
        total = block.sum(axis=0, dtype=np.float64)
        nonzero = total > 0
        safe = np.where(nonzero, total, 1.0)
        centroid = (freqs32 @ block).astype(np.float64) / safe
        dev = freqs32[:, None] - centroid.astype(np.float32)[None, :]
        dev *= dev
        dev *= block
        bandwidth = np.sqrt(dev.sum(axis=0, dtype=np.float64) / safe)
        del dev
        out["centroid"][sl] = np.where(nonzero, centroid, 0.0)
        out["bandwidth"][sl] = np.where(nonzero, bandwidth, 0.0)

        # Rolloff: first bin where the cumulative magnitude reaches roll_percent of the total.
        n_full = (bins // group) * group
        sums = block[:n_full].reshape(bins // group, group, cols).sum(axis=1)
        if n_full < bins:
            sums = np.concatenate([sums, block[n_full:].sum(axis=0, keepdims=True)])
        grouped = np.cumsum(sums, axis=0, dtype=np.float64)
        threshold = roll_percent * grouped[-1]
        g = np.argmax(grouped >= threshold, axis=0)
        before = np.where(g > 0, grouped[np.maximum(g - 1, 0), np.arange(cols)], 0.0)
        rows = np.minimum(g[None, :] * group + np.arange(group)[:, None], bins - 1)
        inside = block[rows, np.arange(cols)[None, :]].astype(np.float64)
        inside[g[None, :] * group + np.arange(group)[:, None] >= bins] = 0.0
        k = np.argmax(before + np.cumsum(inside, axis=0) >= threshold, axis=0)
        out["rolloff"][sl] = np.where(nonzero, freqs[np.minimum(g * group + k, bins - 1)], 0.0)

        power = block * block
        energy = power.sum(axis=0, dtype=np.float64)
        np.maximum(power, np.float32(amin), out=power)
        arith = power.mean(axis=0, dtype=np.float64)
        np.log(power, out=power)
        geo = np.exp(power.mean(axis=0, dtype=np.float64))
        out["flatness"][sl] = np.where(nonzero, geo / arith, 1.0)
        del power

        norms = np.sqrt(energy)
        unit = block / np.where(norms > 0, norms, 1.0).astype(np.float32)[None, :]
        first = prev_unit if prev_unit is not None else unit[:, :1]
        diff = np.diff(np.concatenate([first, unit], axis=1), axis=1)
        diff *= diff
        out["flux"][sl] = np.sqrt(diff.sum(axis=0, dtype=np.float64))
        prev_unit = unit[:, -1:]
    return out


def zero_crossing_frames(y: np.ndarray, *, frame_length: int = STFT_N_FFT,
                         hop_length: int = STFT_HOP, threshold: float = 1e-10) -> np.ndarray:
    """Fraction of zero crossings per centred frame, ``(1 + len(y) // hop_length,)`` float64.

    Identical to ``librosa.feature.zero_crossing_rate(y, frame_length=..., hop_length=...)``
    (edge padding, ``|y| <= threshold`` counted as 0, 0 counted as positive), computed in O(n)
    with one cumulative sum instead of a framed copy of the signal. Edge padding repeats the end
    samples, which adds no crossing, so the padding is never materialised.
    """
    y = np.asarray(y)
    n = y.size
    half = frame_length // 2
    negative = y < -threshold            # sign bit after zeroing |y| <= threshold, 0 positive
    crossings = np.zeros(n, dtype=np.int32)
    np.cumsum(negative[1:] != negative[:-1], dtype=np.int32, out=crossings[1:])
    n_frames = 1 + n // hop_length
    centres = np.arange(n_frames) * hop_length
    first = np.clip(centres - half, 0, max(n - 1, 0))
    last = np.clip(centres + half - 1, 0, max(n - 1, 0))
    # crossings[i]: sign changes between consecutive samples up to sample i; a frame spans the
    # pairs whose both samples lie in [first, last].
    return (crossings[last] - crossings[first]) / float(frame_length)


_FEATURES = ("spectral_centroid", "spectral_bandwidth", "spectral_rolloff", "spectral_flatness",
             "spectral_flux", "zero_crossing_rate")


@register
class SpectralAnalyzer(Analyzer):
    """Spectral centroid, bandwidth, rolloff (Hz), flatness, flux and zero-crossing rate:
    mean and standard deviation over the non-silent frames of the shared STFT."""

    name = "spectral"
    concurrent = True  # thread-safe, small working set: may run beside others
    version = 1
    outputs = tuple(f"{f}_{stat}" for f in _FEATURES for stat in ("mean", "std"))
    class Params(AnalyzerParams):
        silence_db: float = Field(SILENCE_DB, le=0.0, description="frames quieter than this (dBFS) are left out")
        rolloff_percent: float = Field(0.85, gt=0.0, lt=1.0, description="fraction of magnitude below the rolloff frequency")

    def setup(self, device: str = "cpu") -> None:
        """Import the shared STFT's FFT (``scipy.fft``) now, once per process: 0.1 s of start-up
        that would otherwise land in the first track's STFT, and in the machine's rate for it
        (tonal and rhythm import it in their warm-ups)."""
        from scipy import fft  # noqa: F401

    def analyze(self, ctx: TrackContext) -> dict[str, Any]:
        out: dict[str, Any] = dict.fromkeys(self.outputs)
        silence_db = float(self.params["silence_db"])
        note = unusable_note(ctx, silence_db=silence_db)
        if note:
            return {**out, "_note": note}
        mask = active_frames(ctx, silence_db=silence_db)
        mag = shared_stft(ctx)
        active = np.flatnonzero(mask)
        per_frame = spectral_frames(mag[:, active[0]:active[-1] + 1],
                                    roll_percent=float(self.params["rolloff_percent"]))
        local = mask[active[0]:active[-1] + 1]
        zcr = zero_crossing_frames(ctx.mono(STFT_SR))[:mag.shape[1]][active[0]:active[-1] + 1]
        flux_pairs = local.copy()
        flux_pairs[0] = False          # the first kept frame has no kept predecessor here
        flux_pairs[1:] &= local[:-1]   # both frames of the pair must be non-silent
        series = {
            "spectral_centroid": per_frame["centroid"][local],
            "spectral_bandwidth": per_frame["bandwidth"][local],
            "spectral_rolloff": per_frame["rolloff"][local],
            "spectral_flatness": per_frame["flatness"][local],
            "spectral_flux": per_frame["flux"][flux_pairs],
            "zero_crossing_rate": zcr[local],
        }
        for feature, values in series.items():
            if values.size:
                out[f"{feature}_mean"] = finite_or_none(values.mean())
                out[f"{feature}_std"] = finite_or_none(values.std())
        if not series["spectral_flux"].size:
            out["_note"] = "spectral flux needs two consecutive non-silent frames"
        return out
