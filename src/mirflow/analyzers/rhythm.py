"""Rhythm of the mix: global tempo, beats and onsets, from the shared STFT.

Method
------
1. **Onset envelopes**: a 128-band mel power spectrogram is derived from the shared magnitude STFT
   (mono 22.05 kHz, ``n_fft=2048``, ``hop_length=512``, so 43.07 frames/s; see
   :mod:`mirflow.analyzers.spectral`), converted to dB, and librosa's onset strength (positive
   first difference, averaged over bands) is taken twice: over all bands (the *full* envelope,
   used for onsets and ``onset_strength_mean``) and over the bands centred below 1.5 kHz (the
   *low* envelope: kick, snare body, bass). No STFT is recomputed.
2. **Tempo salience** of each candidate tempo from 40 to 200 BPM (0.05 BPM grid), on the sum of the
   two envelopes (each scaled to mean 1, which weights the low bands that carry the beat in most
   music more than the hi-hats that often play twice as fast), lightly smoothed, in 8 s windows
   every 2 s: the mean normalised autocorrelation at the beat period (linearly interpolated between
   lags) and the mean magnitude of the windowed Fourier transform at the beat frequency. The
   autocorrelation is the evidence for a period; it also peaks at multiples of the period (half
   and third tempo). The Fourier transform peaks at multiples of the frequency instead (double
   tempo), so it breaks that tie. The score is ``acf * sqrt(dft)``: the autocorrelation weighted
   by the square root of the Fourier magnitude. With the plain product (version 1), subdivisions
   won too often: eighth notes (hi-hats, arpeggios, strummed chords) make the Fourier magnitude at
   double tempo as large as at the beat, and songs between 74 and 100 BPM came out at double tempo.
3. **Prior, range and metrical level**: the score is weighted by a log-normal prior centred on 120
   BPM with a standard deviation of one octave (a factor 0.61 at 60 and 240 BPM). The centre is the
   preferred tempo of listeners and the mode of tempo distributions of real music (van Noorden &
   Moelants 1999, "Resonance in the perception of musical pulse", J. New Music Research 28;
   Moelants 2002, "Preferred tempo reconsidered", ICMPC 7); the width is kept broad on purpose, so
   that the prior only decides between levels whose evidence is close. It was not refitted here:
   no tempo-annotated collection large enough to fit it was available. The search stops at 40 and
   200 BPM. Faster music is reported at a slower metrical level: at half tempo when its beats
   group in twos, at a third when they group in threes (a fast waltz at its bar rate: a 286 BPM
   annotation came out at 96 BPM); slower music at double tempo. ``bpm_candidates`` offers the
   other level.
4. **Beats and refinement**: librosa's dynamic-programming beat tracker (Ellis 2007) places beats on
   the full+low envelope at the coarse tempo; the tempo is then refined by a least-squares fit of
   beat index against beat time over the runs of beats whose intervals stay within 10 % of the
   median interval (so gaps and sections at another tempo are left out), which averages the frame
   quantisation away; when that moves the tempo by more than 1 % the beats are tracked again at
   the refined tempo. ``bpm`` is the refined tempo (the coarse one when fewer than 4 beats are
   found, or when the refinement would move it by more than 10 %): for music whose tempo changes,
   the tempo of the steadiest, most common beat period.

Outputs
-------
- ``bpm`` (BPM): global tempo, searched over 40-200 BPM; the least-squares refinement can move
  it up to 10 % beyond either end (e.g. 200.3).
- ``bpm_candidates``: the two most likely metrical levels, best first, each
  ``{"bpm": BPM, "salience": share}``: the chosen tempo and its strongest relative at half,
  double, a third or triple the tempo; ``salience`` is each level's prior-weighted score divided
  by the sum over the two (the two add up to 1; 0.5 means the two levels are equally likely). One
  entry when no relative lies in 40-200 BPM.
- ``bpm_confidence`` (0-1): the mean normalised autocorrelation of the onset envelope at the beat
  period over the 8 s windows: near 1 for strictly periodic onsets, near 0 without periodicity.
- ``beats`` (list of s, rounded to ms) and ``beat_count``.
- ``onset_count``, ``onset_rate`` (onsets/s over the whole duration): librosa's peak picking on
  the full envelope scaled to 0-1 by its range (a range of at least 2 dB, so that a steady sound
  has no onsets); ``onset_strength_mean`` (dB per band, >= 0): mean of the full envelope.

Silent audio (no frame of -60 dBFS RMS or more) gives ``None`` everywhere and a ``"_note"``
(``"no content below 11 kHz: ..."`` when the mix is not silent but all of it lies above the
Nyquist frequency of the 22.05 kHz view, e.g. a 12 kHz tone recorded at 48 kHz); audio
shorter than 3 s has no tempo or beats (``None``) but still has onset statistics; audio without
rhythmic onsets (95 % of the full envelope below 0.3 dB, e.g. a steady tone) or without any
periodicity has ``bpm`` ``None``, no beats, and a ``"_note"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.audio import TrackContext
from . import register
from pydantic import Field

from .base import Analyzer, AnalyzerParams
from ..core.stft import (SILENCE_DB, STFT_HOP, STFT_N_FFT, STFT_SR,
                         finite_or_none, power_projection, unusable_note)

#: Frames per second of the onset envelopes.
FRAME_RATE = STFT_SR / STFT_HOP
#: Mel bands of the onset spectrogram, and the upper edge (Hz) of the "low" bands.
N_MELS = 128
LOW_BAND_HZ = 1500.0
#: Tempo search range (BPM) and log-normal prior (centre BPM, standard deviation in octaves).
TEMPO_RANGE = (40.0, 200.0)
PRIOR_CENTER_BPM = 120.0
PRIOR_STD_OCTAVES = 1.0
#: Tempo-salience analysis windows (s), and the shortest audio given a tempo (s).
WINDOW_S = 8.0
WINDOW_HOP_S = 2.0
MIN_TEMPO_SECONDS = 3.0
#: Below this 95th percentile of the full onset envelope (dB per band), the audio has no rhythmic
#: onsets (a steady tone reads about 0.05 dB, music 1.5 dB and more) and gets no tempo.
MIN_ONSET_STRENGTH_DB = 0.3
#: Onset peak picking scales the envelope by its range, but never by less than this (dB), so the
#: tiny frame-to-frame wiggles of a steady sound are not blown up into onsets.
ONSET_MIN_RANGE_DB = 2.0

_GRID_STEP_BPM = 0.05


def onset_envelopes(ctx: TrackContext) -> tuple[np.ndarray, np.ndarray]:
    """``(full, low)`` onset-strength envelopes ``(frames,)`` float32 of the shared STFT, memoised.

    ``full`` equals ``librosa.onset.onset_strength(S=librosa.power_to_db(
    librosa.feature.melspectrogram(S=power, sr=22050, n_mels=128)))``; ``low`` is the same over
    the mel bands centred below :data:`LOW_BAND_HZ`.
    """
    def compute() -> tuple[np.ndarray, np.ndarray]:
        from ..core import jit

        librosa = jit.librosa()  # its numba kernels built on first use (see core.jit)

        basis = librosa.filters.mel(sr=STFT_SR, n_fft=STFT_N_FFT, n_mels=N_MELS)
        mel_db = librosa.power_to_db(power_projection(ctx, basis, key="mel-power"))
        centres = librosa.mel_frequencies(N_MELS + 2, fmax=STFT_SR / 2.0)[1:-1]
        n_low = int(np.clip(np.searchsorted(centres, LOW_BAND_HZ), 1, N_MELS - 1))
        low, high = librosa.onset.onset_strength_multi(
            S=mel_db, sr=STFT_SR, hop_length=STFT_HOP, n_fft=STFT_N_FFT,
            channels=[0, n_low, N_MELS])
        full = (n_low * low + (N_MELS - n_low) * high) / N_MELS
        return full.astype(np.float32), low.astype(np.float32)

    return ctx.memo(("onset-envelopes", STFT_SR, STFT_N_FFT, STFT_HOP, N_MELS, LOW_BAND_HZ),
                    compute)


def beat_envelope(full: np.ndarray, low: np.ndarray) -> np.ndarray:
    """The envelope tempo and beats are computed on: ``full`` and ``low``, each scaled to mean 1."""
    def unit(x: np.ndarray) -> np.ndarray:
        m = float(np.mean(x)) if x.size else 0.0
        return x / m if m > 0 else np.zeros_like(x, dtype=np.float64)

    return unit(full.astype(np.float64)) + unit(low.astype(np.float64))


def tempo_salience(envelope: np.ndarray, grid: np.ndarray, *, fps: float = FRAME_RATE,
                   window_s: float = WINDOW_S, hop_s: float = WINDOW_HOP_S,
                   smooth_frames: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation and Fourier salience of each tempo of ``grid`` (BPM), both ``(len(grid),)``.

    ``acf[i]`` is the mean over windows of the normalised autocorrelation (1 at lag 0) at the lag
    ``60 fps / grid[i]`` frames; ``dft[i]`` the mean of the Hann-windowed Fourier magnitude (scaled
    to max 1 per window) at ``grid[i] / 60`` Hz. Windows without onsets are skipped; both are 0
    when every window is empty.
    """
    from scipy.ndimage import gaussian_filter1d

    x = np.asarray(envelope, dtype=np.float64)
    if smooth_frames > 0 and x.size > 1:
        x = gaussian_filter1d(x, smooth_frames, mode="nearest")
    win = max(2, min(x.size, int(round(window_s * fps))))
    hop = max(1, int(round(hop_s * fps)))
    if x.size < 2:
        return np.zeros(grid.size), np.zeros(grid.size)
    segs = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]
    segs = segs - segs.mean(axis=1, keepdims=True)
    energy = np.einsum("ij,ij->i", segs, segs)
    segs = segs[energy > 1e-12 * max(float(energy.max()), 1e-300)]
    if not segs.size:
        return np.zeros(grid.size), np.zeros(grid.size)

    spec = np.fft.rfft(segs, 2 * win, axis=1)
    acf = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :win]
    acf /= acf[:, :1]
    lags = 60.0 * fps / grid
    i0 = np.clip(np.floor(lags).astype(int), 0, win - 2)
    frac = np.clip(lags - i0, 0.0, 1.0)
    acf_at = (1 - frac) * acf[:, i0] + frac * acf[:, i0 + 1]
    acf_at[:, lags > win - 1] = 0.0  # periods longer than the window: no evidence

    n_fft = 1 << int(np.ceil(np.log2(8 * win)))
    mag = np.abs(np.fft.rfft(segs * np.hanning(win), n_fft, axis=1))
    mag /= np.maximum(mag.max(axis=1, keepdims=True), 1e-300)
    pos = grid / 60.0 / fps * n_fft  # fractional FFT bin of each tempo
    j0 = np.clip(np.floor(pos).astype(int), 0, mag.shape[1] - 2)
    jf = pos - j0
    dft_at = (1 - jf) * mag[:, j0] + jf * mag[:, j0 + 1]
    return np.maximum(acf_at.mean(axis=0), 0.0), dft_at.mean(axis=0)


def tempo_prior(grid: np.ndarray) -> np.ndarray:
    """Log-normal tempo prior (max 1): centre :data:`PRIOR_CENTER_BPM`, std :data:`PRIOR_STD_OCTAVES`."""
    return np.exp(-0.5 * (np.log2(grid / PRIOR_CENTER_BPM) / PRIOR_STD_OCTAVES) ** 2)


def tempo_score(acf: np.ndarray, dft: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Prior-weighted salience of each tempo of ``grid``: ``acf * sqrt(dft) * prior``.

    The autocorrelation is the evidence for a beat period; the Fourier magnitude only breaks the
    tie between the autocorrelation's peaks at multiples of the period (half, third tempo). Its
    square root keeps that role but stops subdivisions from winning: eighth notes (hi-hats,
    arpeggios) make the Fourier magnitude at double tempo as large as at the beat or larger,
    and with the plain product a song at 74-100 BPM was reported at double tempo.
    """
    return acf * np.sqrt(dft) * tempo_prior(grid)


def refine_tempo(beat_frames: np.ndarray, coarse_bpm: float, *, fps: float = FRAME_RATE,
                 tolerance: float = 0.1, max_change: float = 0.1) -> float:
    """Tempo (BPM) from a least-squares fit to beat positions, robust to gaps and tempo changes.

    The median inter-beat interval sets the reference period; runs of consecutive beats whose
    intervals stay within ``tolerance`` (relative) of it are kept, and one common slope (frames per
    beat) is fitted to all runs, each run with its own intercept. This averages the frame
    quantisation away (precision far below one frame) while ignoring sections where the tracker
    followed another period. Returns ``coarse_bpm`` when fewer than 3 intervals qualify or the fit
    moves the tempo by more than ``max_change`` (relative).
    """
    beats = np.asarray(beat_frames, dtype=np.float64)
    if beats.size < 4:
        return coarse_bpm
    ibi = np.diff(beats)
    ok = np.abs(ibi / np.median(ibi) - 1.0) <= tolerance
    if ok.sum() < 3:
        return coarse_bpm
    num = den = 0.0
    run_start = None
    for i in range(ibi.size + 1):           # runs of consecutive qualifying intervals
        inside = i < ibi.size and ok[i]
        if inside and run_start is None:
            run_start = i
        elif not inside and run_start is not None:
            t = beats[run_start:i + 1]
            k = np.arange(t.size, dtype=np.float64)
            k -= k.mean()
            num += float(k @ (t - t.mean()))
            den += float(k @ k)
            run_start = None
    if den <= 0 or num <= 0:
        return coarse_bpm
    refined = 60.0 * fps / (num / den)
    return refined if abs(refined / coarse_bpm - 1.0) <= max_change else coarse_bpm


#: Metrical relatives of the best tempo that are offered as the second candidate (ratios).
LEVEL_RATIOS = (0.5, 2.0, 1.0 / 3.0, 3.0)
#: Half-width (relative) of the window in which a metrical relative is looked for.
LEVEL_TOLERANCE = 0.03


def metrical_candidates(score: np.ndarray, grid: np.ndarray, best: int
                        ) -> list[tuple[float, float]]:
    """The best tempo and its strongest metrical relative, ``[(bpm, share), ...]`` best first.

    The relative is the highest-scoring tempo within :data:`LEVEL_TOLERANCE` of ``grid[best]``
    times one of :data:`LEVEL_RATIOS` (half, double, a third, triple) inside the search range.
    ``share`` is each level's prior-weighted salience divided by the sum over the two (so the two
    shares add up to 1): 0.5 means the two levels are equally likely, 1.0 that the other level
    has no evidence at all. A single entry is returned when no relative lies in the range.
    """
    top = float(grid[best])
    found: tuple[float, int] | None = None
    for ratio in LEVEL_RATIOS:
        target = top * ratio
        window = np.flatnonzero(np.abs(grid / target - 1.0) <= LEVEL_TOLERANCE)
        if window.size == 0:
            continue
        i = int(window[np.argmax(score[window])])
        if found is None or score[i] > found[0]:
            found = (float(score[i]), i)
    if found is None or found[0] <= 0:
        return [(top, 1.0)]
    total = float(score[best]) + found[0]
    return [(top, float(score[best]) / total), (float(grid[found[1]]), found[0] / total)]


def estimate_tempo(envelope: np.ndarray, *, fps: float = FRAME_RATE
                   ) -> tuple[float | None, float, np.ndarray, list[tuple[float, float]]]:
    """``(bpm, confidence, beat_frames, candidates)`` of a beat envelope (see the module docstring).

    ``bpm`` is ``None`` (confidence 0, no beats, no candidates) when the envelope shows no
    periodicity at all or the beat tracker finds no beat. ``candidates`` is
    :func:`metrical_candidates` with the first tempo replaced by the refined ``bpm``.
    """
    from ..core import jit

    beat = jit.librosa().beat  # its one uncached numba kernel cached (see core.jit)
    grid = np.arange(TEMPO_RANGE[0], TEMPO_RANGE[1] + _GRID_STEP_BPM / 2, _GRID_STEP_BPM)
    acf, dft = tempo_salience(envelope, grid, fps=fps)
    score = tempo_score(acf, dft, grid)
    no_beats = np.zeros(0, dtype=int)
    if not np.any(score > 0):
        return None, 0.0, no_beats, []
    best = int(np.argmax(score))
    coarse = float(grid[best])
    _, beats = beat.beat_track(onset_envelope=envelope, sr=STFT_SR, hop_length=STFT_HOP,
                               bpm=coarse, tightness=100, trim=True, units="frames")
    beats = np.asarray(beats, dtype=int)
    if beats.size == 0:
        return None, 0.0, no_beats, []
    bpm = refine_tempo(beats, coarse, fps=fps)
    if abs(bpm / coarse - 1.0) > 0.01:     # track again at the refined tempo
        _, again = beat.beat_track(onset_envelope=envelope, sr=STFT_SR, hop_length=STFT_HOP,
                                   bpm=bpm, tightness=100, trim=True, units="frames")
        if len(again):
            beats = np.asarray(again, dtype=int)
    confidence = float(np.clip(np.interp(bpm, grid, acf), 0.0, 1.0))
    candidates = metrical_candidates(score, grid, best)
    candidates[0] = (bpm, candidates[0][1])
    return bpm, confidence, beats, candidates


@register
class RhythmAnalyzer(Analyzer):
    """Global tempo (BPM) with confidence, beat times (s), onset count, rate (/s) and mean strength."""

    name = "rhythm"
    concurrent = True  # thread-safe, small working set: may run beside others
    version = 2
    outputs = ("bpm", "bpm_confidence", "bpm_candidates", "beats", "beat_count", "onset_count",
               "onset_rate", "onset_strength_mean")
    class Params(AnalyzerParams):
        silence_db: float = Field(SILENCE_DB, le=0.0, description="frames quieter than this (dBFS) count as silent")

    def setup(self, device: str = "cpu") -> None:
        """Load librosa's beat and onset code and its numba functions now, once per process
        (seconds of work that belong to worker start-up, not to the first track), compiling them
        under a machine-wide lock so parallel workers never write the numba cache at once."""
        from ..core.jit import warm_up, warm_up_context

        warm_up(self.name, lambda: self.analyze(warm_up_context()))

    def analyze(self, ctx: TrackContext) -> dict[str, Any]:
        from ..core import jit

        librosa = jit.librosa()
        out: dict[str, Any] = dict.fromkeys(self.outputs)
        note = unusable_note(ctx, silence_db=float(self.params["silence_db"]))
        if note:
            return {**out, "_note": note}
        full, low = onset_envelopes(ctx)
        duration = ctx.mono(STFT_SR).size / STFT_SR
        scaled = (full - full.min()) / max(float(np.ptp(full)), ONSET_MIN_RANGE_DB)
        onsets = librosa.onset.onset_detect(onset_envelope=scaled, sr=STFT_SR, hop_length=STFT_HOP,
                                            normalize=False, units="frames")
        out["onset_count"] = int(len(onsets))
        out["onset_rate"] = finite_or_none(len(onsets) / duration)
        out["onset_strength_mean"] = finite_or_none(np.mean(full, dtype=np.float64))
        if duration < MIN_TEMPO_SECONDS:
            out["_note"] = (f"too short for tempo and beats: {duration:.2f} s, "
                            f"at least {MIN_TEMPO_SECONDS:g} s needed")
            return out
        if np.percentile(full, 95) < MIN_ONSET_STRENGTH_DB:
            out.update(beats=[], beat_count=0,
                       _note=f"no rhythmic onsets: the onset envelope stays below "
                             f"{MIN_ONSET_STRENGTH_DB:g} dB in 95 % of frames")
            return out
        bpm, confidence, beats, candidates = estimate_tempo(beat_envelope(full, low))
        if bpm is None:
            out.update(beats=[], beat_count=0,
                       _note="no beat: the onset envelope shows no periodicity")
            return out
        beat_times = np.round(beats / FRAME_RATE, 3)
        out.update(bpm=finite_or_none(round(bpm, 2)), bpm_confidence=finite_or_none(confidence),
                   beats=[float(t) for t in beat_times], beat_count=int(beat_times.size),
                   bpm_candidates=[{"bpm": round(b, 2), "salience": round(share, 3)}
                                   for b, share in candidates])
        return out
