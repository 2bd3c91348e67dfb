"""The VGGish log-mel front end, in numpy, matching Essentia's ``TensorflowPredictVGGish``.

Every VGGish-family model (the single-stage classifiers, the ``audioset-vggish-3`` embedding model)
reads the same input: 96-frame patches of 64 log-compressed mel bands computed from 16 kHz mono
audio. This module reproduces what Essentia computes inside ``TensorflowPredictVGGish`` so scores
match the seed's, and so one front end serves every model of a track:

- ``FrameCutter(frameSize=400, hopSize=160)`` with Essentia's defaults: the first frame is centred
  on sample 0 (it starts 200 samples before the signal, zero padded) and frames continue while a
  frame's centre lies before ``len(signal) + hop``, i.e. ``ceil(n / 160) + 1`` frames. With the
  default ``silentFrames="noise"``, a *silent* frame (mean power below 1e-10, -100 dB) that is zero
  padded on the left is rebuilt from the wrong offset (its content is shifted right by the padding),
  then a -200 dB noise is added; the shift is reproduced here (it changes the first two frames of
  tracks that start in digital near-silence by up to a few 1e-3), the inaudible noise is not;
- ``TensorflowInputVGGish``: symmetric Hann window of 400 samples (not normalised), zero padded at
  the end to 512, magnitude spectrum (257 bins), 64 triangular mel bands on the HTK mel scale
  between 125 and 7500 Hz (triangles of unit height, weighted linearly in mel, magnitude not
  power), then ``log(bands + 0.01)``;
- ``VectorRealToTensor`` with patches of 96 frames every 93 frames (``patchHopSize`` 93) and the last
  partial patch discarded.

Arrays are ``float32``: frames ``(n_frames, 64)``, patches ``(n_patches, 96, 64)``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Sample rate the front end works at (Hz).
SAMPLE_RATE = 16000
#: Analysis frame length (samples, 25 ms) and hop (samples, 10 ms).
FRAME_SIZE = 400
HOP_SIZE = 160
#: FFT size (the 400-sample frame is zero padded to it).
FFT_SIZE = 512
#: Mel bands and their range (Hz).
N_BANDS = 64
F_MIN = 125.0
F_MAX = 7500.0
#: Offset added before the natural logarithm.
LOG_OFFSET = 0.01
#: Frames per patch and frames between the starts of adjacent patches (Essentia's defaults).
PATCH_FRAMES = 96
PATCH_HOP = 93

#: Version of this front end; part of the classifier parameters hash.
FRONTEND_VERSION = 1


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """The ``(257, 64)`` filterbank that maps a magnitude spectrum to the 64 VGGish mel bands.

    Triangles are built as Essentia's ``TriangularBands`` does with ``weighting="htkMel"`` and
    ``normalize="unit_max"``: band ``i`` spans the edge frequencies ``f[i]..f[i+2]`` (66 edges equally
    spaced in HTK mel between 125 and 7500 Hz), its weight rises linearly in mel from 0 at ``f[i]`` to 1
    at ``f[i+1]`` and falls back to 0 at ``f[i+2]``; only bins inside ``[f[i], f[i+2]]`` count.
    """
    n_bins = FFT_SIZE // 2 + 1
    edges = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), N_BANDS + 2))
    scale = (SAMPLE_RATE / 2.0) / (n_bins - 1)
    bin_hz = np.arange(n_bins) * scale
    bin_mel = _hz_to_mel(bin_hz)
    edge_mel = _hz_to_mel(edges)
    weights = np.zeros((n_bins, N_BANDS), dtype=np.float64)
    for i in range(N_BANDS):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        j0, j1 = int(np.ceil(lo / scale)), int(np.floor(hi / scale))
        j = np.arange(j0, j1 + 1)
        rising = (bin_mel[j] - edge_mel[i]) / (edge_mel[i + 1] - edge_mel[i])
        falling = (edge_mel[i + 2] - bin_mel[j]) / (edge_mel[i + 2] - edge_mel[i + 1])
        weights[j, i] = np.where(bin_hz[j] < mid, rising, falling)
    return weights


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(FRAME_SIZE)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / (FRAME_SIZE - 1))  # symmetric Hann


def n_frames(n_samples: int) -> int:
    """Number of frames Essentia's ``FrameCutter`` yields for ``n_samples`` samples."""
    if n_samples <= 0:
        return 0
    return -(-n_samples // HOP_SIZE) + 1


def n_patches(n_samples: int) -> int:
    """Number of whole 96-frame patches (hop 93) for ``n_samples`` samples at 16 kHz."""
    frames = n_frames(n_samples)
    return 0 if frames < PATCH_FRAMES else (frames - PATCH_FRAMES) // PATCH_HOP + 1


#: The shortest signal that gives one patch: 15 041 samples, about 0.94 s at 16 kHz.
MIN_SAMPLES = (PATCH_FRAMES - 2) * HOP_SIZE + 1


def log_mel_frames(signal: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
    """Log-mel frames of a 16 kHz mono signal, as ``TensorflowInputVGGish`` after ``FrameCutter``.

    Parameters
    ----------
    signal : np.ndarray [shape=(n,)]
        Mono audio at 16 kHz, float (any scale; music decoded to [-1, 1]).
    chunk : int
        Frames processed at a time (bounds the temporary memory; does not change the result).

    Returns
    -------
    np.ndarray [shape=(n_frames, 64), dtype=float32]
        ``log(mel + 0.01)`` per 10 ms frame; ``n_frames = ceil(n / 160) + 1`` (0 for an empty signal).
    """
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a mono signal of shape (n,), got {x.shape}")
    count = n_frames(x.size)
    if count == 0:
        return np.zeros((0, N_BANDS), dtype=np.float32)
    half = FRAME_SIZE // 2
    need = (count - 1) * HOP_SIZE + FRAME_SIZE
    padded = np.zeros(need, dtype=np.float32)
    padded[half:half + x.size] = x[: need - half]
    frames = np.lib.stride_tricks.sliding_window_view(padded, FRAME_SIZE)[::HOP_SIZE]
    lead = _essentia_lead_frames(frames, x.size)
    window = _window().astype(np.float32)
    mel = mel_matrix().astype(np.float32)
    out = np.empty((count, N_BANDS), dtype=np.float32)
    for start in range(0, count, chunk):
        block = frames[start:start + chunk] * window
        if start == 0:
            block[: len(lead)] = lead * window
        spec = np.abs(np.fft.rfft(block, n=FFT_SIZE, axis=1)).astype(np.float32)
        np.log(spec @ mel + np.float32(LOG_OFFSET), out=out[start:start + chunk])
    return out


#: Essentia's ``isSilent``: mean power of the frame below this (-100 dB).
_SILENCE_CUTOFF = 1e-10


def _essentia_lead_frames(frames: np.ndarray, n_samples: int) -> np.ndarray:
    """The left-padded first frames as Essentia's streaming ``FrameCutter`` emits them.

    A frame that starts ``zp`` samples before the signal holds ``zp`` zeros then ``acq`` samples. When
    it is silent, Essentia's ``ADD_NOISE`` branch copies ``frame[0:acq]`` (zeros included) to offset
    ``zp`` of a zero frame, shifting the content right by ``zp``; we do the same (without its -200 dB
    noise, which changes nothing measurable).
    """
    half = FRAME_SIZE // 2
    out = np.array(frames[:2], dtype=np.float32)
    for k in range(len(out)):
        zp = half - k * HOP_SIZE
        if zp <= 0:
            break
        frame = out[k]
        power = float(np.dot(frame, frame)) / FRAME_SIZE
        if power < _SILENCE_CUTOFF:
            acq = min(FRAME_SIZE - zp, n_samples)
            shifted = np.zeros(FRAME_SIZE, dtype=np.float32)
            shifted[zp:zp + acq] = frame[:acq]
            out[k] = shifted
    return out


def patches_from_frames(frames: np.ndarray, *, patch_hop: int = PATCH_HOP) -> np.ndarray:
    """Cut ``(n_frames, 64)`` frames into ``(n_patches, 96, 64)`` patches every ``patch_hop`` frames.

    The last partial patch is discarded (Essentia's ``lastPatchMode="discard"``); fewer than 96
    frames give an empty ``(0, 96, 64)`` array.
    """
    count = 0 if len(frames) < PATCH_FRAMES else (len(frames) - PATCH_FRAMES) // patch_hop + 1
    if count == 0:
        return np.zeros((0, PATCH_FRAMES, frames.shape[1] if frames.ndim == 2 else N_BANDS),
                        dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(frames, (PATCH_FRAMES, frames.shape[1]))
    return np.ascontiguousarray(view[::patch_hop, 0][:count], dtype=np.float32)


def patches(signal: np.ndarray, *, patch_hop: int = PATCH_HOP) -> np.ndarray:
    """VGGish input patches ``(n_patches, 96, 64)`` float32 of a 16 kHz mono signal."""
    return patches_from_frames(log_mel_frames(signal), patch_hop=patch_hop)


def track_patches(ctx, *, patch_hop: int = PATCH_HOP,  # noqa: ANN001 - TrackContext
                  resampler: str = "linear") -> np.ndarray:
    """The VGGish patches of a :class:`~mirflow.core.audio.TrackContext`, computed once per track.

    The 16 kHz view is the mono downmix resampled with ``resampler``: ``"linear"`` (default)
    reproduces Essentia's documented inference pipeline, ``MonoLoader(sampleRate=16000,
    resampleQuality=4)`` (downmix, then libsamplerate's linear converter; see
    :func:`mirflow.core.audio.resample_linear`); ``"soxr"`` uses soxr's band-limited high-quality
    converter, which removes content above 8 kHz instead of folding it back into the band as
    linear interpolation does, and so gives scores up to about 0.02 away from Essentia's on bright
    music. Memoised in the context under
    ``("vggish-patches", patch_hop, FRONTEND_VERSION, resampler)``, so every VGGish model of the
    track (and every analyzer) shares one front end.
    """
    return ctx.memo(("vggish-patches", patch_hop, FRONTEND_VERSION, resampler),
                    lambda: patches(ctx.mono(SAMPLE_RATE, resampler=resampler),
                                    patch_hop=patch_hop))


__all__ = ["SAMPLE_RATE", "PATCH_FRAMES", "PATCH_HOP", "N_BANDS", "MIN_SAMPLES", "FRONTEND_VERSION",
           "log_mel_frames", "patches", "patches_from_frames", "track_patches", "n_frames",
           "n_patches", "mel_matrix"]

