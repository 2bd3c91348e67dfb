"""The shared magnitude STFT of a track and what several analyzers derive from it.

One magnitude STFT of the mono 22.05 kHz view (``n_fft=2048``, ``hop_length=512``, Hann window,
centred frames: 93 ms frames every 23.2 ms) is computed once per track and memoised in the
:class:`~mirflow.core.audio.TrackContext`; spectral, tonal and rhythm features all read it. The
helpers here (:func:`power_projection`, :func:`frame_levels_db`, :func:`active_frames`) memoise what
they derive from it too, so that no analyzer recomputes it.
"""

from __future__ import annotations

import math

import numpy as np

from .audio import TrackContext

#: The shared STFT of the mono view: sample rate (Hz), FFT size and hop (samples).
STFT_SR = 22050
STFT_N_FFT = 2048
STFT_HOP = 512
#: Default silence threshold for frames, dBFS (RMS of the Hann-windowed frame).
SILENCE_DB = -60.0

BLOCK = 256  #: frames per vectorised block (a 1 MiB float32 block stays in cache)


# -- helpers shared by the spectral, tonal and rhythm analyzers -----------------------------------
def shared_stft(ctx: TrackContext) -> np.ndarray:
    """The shared magnitude STFT ``(1025, frames)`` float32 of the mono 22.05 kHz view."""
    return ctx.stft(sr=STFT_SR, n_fft=STFT_N_FFT, hop_length=STFT_HOP)


def power_projection(ctx: TrackContext, basis: np.ndarray, *, key: str) -> np.ndarray:
    """``basis @ shared_stft(ctx) ** 2`` ``(rows, frames)`` float32, memoised under ``key``.

    ``basis`` is ``(rows, 1025)``: a mel or chroma filter bank, or energy weights. The power
    spectrogram is squared block by block and never stored whole, which saves a copy the size of
    the STFT (about 100 MiB for a 10-minute track).
    """
    def compute() -> np.ndarray:
        mag = shared_stft(ctx)
        weights = np.ascontiguousarray(basis, dtype=np.float32)
        out = np.empty((weights.shape[0], mag.shape[1]), dtype=np.float32)
        for start in range(0, mag.shape[1], 4 * BLOCK):
            block = np.square(mag[:, start:start + 4 * BLOCK])
            out[:, start:start + block.shape[1]] = weights @ block
        return out

    return ctx.memo((key, STFT_SR, STFT_N_FFT, STFT_HOP), compute)


def frame_levels_db(ctx: TrackContext) -> np.ndarray:
    """RMS level of each STFT frame in dBFS ``(frames,)`` float64, floored at -200 dBFS.

    Same value as ``librosa.feature.rms(S=shared_stft(ctx))`` in dB: Parseval on the one-sided
    spectrum, i.e. the RMS of the Hann-windowed frame.
    """
    def compute() -> np.ndarray:
        weights = np.full((1, STFT_N_FFT // 2 + 1), 2.0 / STFT_N_FFT**2)
        weights[0, [0, -1]] *= 0.5     # DC and Nyquist bins appear once in the full spectrum
        energy = power_projection(ctx, weights, key="frame-energy")[0].astype(np.float64)
        return 10.0 * np.log10(np.maximum(energy, 1e-20))

    return ctx.shared(f"frame-levels@{STFT_SR}/{STFT_N_FFT}/{STFT_HOP}",
                      ("frame-levels-db", STFT_SR, STFT_N_FFT, STFT_HOP), compute)


def active_frames(ctx: TrackContext, *, silence_db: float = SILENCE_DB) -> np.ndarray:
    """Boolean mask ``(frames,)`` of the STFT frames whose RMS level is at least ``silence_db`` dBFS."""
    return frame_levels_db(ctx) >= silence_db


def too_short_note(ctx: TrackContext) -> str | None:
    """A reason when the mono 22.05 kHz view holds no sample at all, else ``None``."""
    if ctx.mono(STFT_SR).size == 0:
        return f"audio too short: {ctx.audio.frames} sample(s) at {ctx.sr} Hz"
    return None


def native_peak_level_db(ctx: TrackContext) -> float:
    """Highest RMS level (dBFS) of the native-rate mono mix over frames as long as one STFT frame
    (93 ms), non-overlapping; -200 dBFS for an empty or all-zero mix."""
    y = ctx.mono()
    n = max(1, int(round(STFT_N_FFT * ctx.sr / STFT_SR)))
    if y.size == 0:
        return -200.0
    frames = y[: (y.size // n) * n].reshape(-1, n) if y.size >= n else y[None, :]
    energy = float(np.max(np.mean(np.square(frames, dtype=np.float64), axis=1)))
    return 10.0 * math.log10(max(energy, 1e-20))


def unusable_note(ctx: TrackContext, *, silence_db: float) -> str | None:
    """Why the mix cannot give frame statistics, else ``None``.

    The reasons: no sample at all in the 22.05 kHz view; every frame of that view quieter than
    ``silence_db`` while the native-rate mix is not (its content lies above the 11.025 kHz Nyquist
    frequency of the analysis view, e.g. a 12 kHz tone recorded at 48 kHz: "no content below
    11 kHz"); or the mix itself silent.
    """
    note = too_short_note(ctx)
    if note is None and not active_frames(ctx, silence_db=silence_db).any():
        native_db = native_peak_level_db(ctx) if ctx.sr > STFT_SR else -200.0
        if native_db >= silence_db:
            note = (f"no content below {STFT_SR / 2000:.0f} kHz: the {STFT_SR / 1000:g} kHz "
                    f"analysis view has no frame reaching {silence_db:g} dBFS, while the "
                    f"{ctx.sr / 1000:g} kHz mix reaches {native_db:.1f} dBFS, all of it "
                    f"above {STFT_SR / 2000:g} kHz")
        else:
            note = f"silent: no frame reaches {silence_db:g} dBFS"
    return note


def finite_or_none(value: float | np.floating) -> float | None:
    """``float(value)``, or ``None`` for NaN and infinities (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None
