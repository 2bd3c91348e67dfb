"""Loudness of the full mix: integrated loudness, loudness range, true peak, sample peak, RMS.

Standards and conventions
-------------------------
- **Integrated loudness** (``lufs``, LUFS): ITU-R BS.1770-4. K-weighting (high shelf + RLB high
  pass), 400 ms blocks with 75 % overlap (a 100 ms hop), absolute gate -70 LUFS, relative gate
  -10 LU below the loudness of the blocks above the absolute gate.
- **Loudness range** (``lra``, LU): EBU Tech 3342. Short-term loudness of 3 s blocks every 100 ms
  (10 Hz), absolute gate -70 LUFS, relative gate -20 LU below the power mean of the blocks above the
  absolute gate, then the 95th minus the 10th percentile of the remaining block loudnesses, at the
  nearest ranks ``round((n - 1) p)`` of Tech 3342's example code (libebur128 does the same; FFmpeg's
  ``ebur128`` filter takes the 10th percentile one rank lower, which shows on short tracks).
- **True peak** (``true_peak_dbtp``, dBTP): ITU-R BS.1770-4 Annex 2, 4x oversampling at every input
  rate (soxr "HQ", see :func:`true_peak` for why not the Annex's example filter); the maximum over
  channels of the absolute oversampled signal (never below the sample peak).
- **Sample peak** (``peak_dbfs``, dBFS): ``20 log10 max |x|`` over all channels and samples.
- **RMS** (``rms_dbfs``, dBFS): ``10 log10 mean(x**2)`` over all channels and samples together,
  with full scale = a square wave at +-1, so a full-scale sine reads -3.01 dBFS (the convention of
  sample-domain meters; AES17 would add 3.01 dB so that the sine reads 0).

The K-weighted signal is computed once and reduced to energies on a 100 ms grid; integrated loudness
(4 cells per block) and loudness range (30 cells per block) are both derived from that grid, so the
filter runs once per channel and no filtered copy of the track is ever held in memory. Everything is
processed in chunks of about 2**16 samples, so the extra memory is a few MiB whatever the track length.

Channel weights (BS.1770-4 Table 3, assuming the WAVE/FFmpeg channel order, since decoded audio
carries no layout): 1 or 2 or 3 channels (L R C): 1.0 each; 5 channels (L R C Ls Rs): 1, 1, 1, 1.41,
1.41; 6 channels (5.1, L R C LFE Ls Rs): 1, 1, 1, 0 (LFE excluded), 1.41, 1.41; 7 channels (6.1,
L R C LFE Cs Ls Rs) and 8 channels (7.1, L R C LFE Lb Rb Ls Rs): LFE excluded, 1.41 for every
surround channel (as FFmpeg's ``ebur128`` does); any other count: 1.0 for every channel.

Silence and very short audio never produce ``-inf`` or ``NaN``: the value is ``None`` and the
reason goes to the ``"_note"`` key (which the engine moves into the sidecar record).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..core.audio import TrackContext
from . import register
from .base import Analyzer

log = logging.getLogger(__name__)

#: Absolute gate of BS.1770-4 and EBU Tech 3342, LUFS.
ABSOLUTE_GATE_LUFS = -70.0
#: Relative gate for integrated loudness (BS.1770-4), LU.
INTEGRATED_RELATIVE_GATE_LU = -10.0
#: Relative gate for loudness range (EBU Tech 3342), LU.
LRA_RELATIVE_GATE_LU = -20.0
#: Percentiles of the gated short-term loudness distribution spanned by the loudness range.
LRA_PERCENTILES = (10.0, 95.0)
#: Oversampling factor of the true-peak meter.
TRUE_PEAK_OVERSAMPLING = 4

_LOUDNESS_OFFSET = -0.691      # BS.1770 eq. 2: makes a 0 dBFS 1 kHz sine in one channel read -3.01 LUFS
_CELLS_PER_BLOCK = 4           # 400 ms gating block = 4 cells of 100 ms
_CELLS_PER_SHORT_TERM = 30     # 3 s short-term block = 30 cells of 100 ms
_CHUNK = 1 << 16               # samples per channel processed at a time

_SURROUND = 1.41


def channel_weights(channels: int) -> np.ndarray:
    """BS.1770-4 channel weights ``G_i`` for ``channels`` channels in WAVE/FFmpeg order, ``(channels,)``.

    See the module docstring for the layouts assumed; LFE channels get 0 (excluded).
    """
    table = {
        5: [1.0, 1.0, 1.0, _SURROUND, _SURROUND],                          # L R C Ls Rs
        6: [1.0, 1.0, 1.0, 0.0, _SURROUND, _SURROUND],                     # 5.1
        7: [1.0, 1.0, 1.0, 0.0, _SURROUND, _SURROUND, _SURROUND],          # 6.1
        8: [1.0, 1.0, 1.0, 0.0, _SURROUND, _SURROUND, _SURROUND, _SURROUND],  # 7.1
    }
    return np.array(table.get(channels, [1.0] * channels), dtype=np.float64)


#: BS.1770-4 K-weighting, stage 1 (head-related high shelf): Brecht De Man's analogue prototype, gain
#: (dB), quality factor and centre frequency (Hz) that reproduce Table 1's 48 kHz coefficients.
_SHELF_GAIN_DB, _SHELF_Q, _SHELF_HZ = 3.99984385397, 0.7071752369554193, 1681.9744509555319
#: Exponent relating the shelf's mid-band gain to its high-frequency gain in that prototype.
_SHELF_MID_EXPONENT = 0.499666774155
#: Stage 2 (RLB high pass): quality factor and cut-off (Hz) of the same prototypes.
_HIGH_PASS_Q, _HIGH_PASS_HZ = 0.5003270373253953, 38.13547087613982


def k_weighting_sos(sr: int) -> np.ndarray:
    """The BS.1770-4 K-weighting filter at ``sr`` Hz as second-order sections, ``(2, 6)`` float64.

    Brecht De Man's analogue prototypes, which reproduce the coefficients BS.1770-4 Table 1
    publishes for 48 kHz exactly, moved to ``sr`` by the bilinear transform with pre-warping
    (``K = tan(pi f0 / sr)``): the design of libebur128, FFmpeg's ``ebur128`` and pyloudnorm's
    ``"DeMan"`` filters (the tests check it equals pyloudnorm's to the bit). pyloudnorm's default
    ``"K-weighting"`` class instead uses RBJ cookbook biquads, which drift from the standard as
    ``sr`` falls (0.04 LU on noise at 44.1 kHz, 0.24 LU at 8 kHz). Computed here rather than by
    pyloudnorm, whose import loads all of ``scipy.signal`` (about a second of a worker's start-up).
    """
    k = np.tan(np.pi * _SHELF_HZ / sr)
    high = np.power(10.0, _SHELF_GAIN_DB / 20.0)   # gain far above the shelf
    mid = np.power(high, _SHELF_MID_EXPONENT)      # gain at the shelf's centre
    norm = 1.0 + k / _SHELF_Q + k * k
    shelf = [(high + mid * k / _SHELF_Q + k * k) / norm, 2.0 * (k * k - high) / norm,
             (high - mid * k / _SHELF_Q + k * k) / norm,
             1.0, 2.0 * (k * k - 1.0) / norm, (1.0 - k / _SHELF_Q + k * k) / norm]
    k = np.tan(np.pi * _HIGH_PASS_HZ / sr)
    norm = 1.0 + k / _HIGH_PASS_Q + k * k
    high_pass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / norm, (1.0 - k / _HIGH_PASS_Q + k * k) / norm]
    return np.array([shelf, high_pass], dtype=np.float64)


@lru_cache(maxsize=1)
def sos_kernel() -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    """SciPy's compiled cascade of second-order sections, ``kernel(sos, x, zi)``, filtering in place
    ``x`` ``(signals, n)`` float64 C-contiguous from and into the states ``zi`` ``(signals, sections,
    2)`` float64 C-contiguous: the loop inside :func:`scipy.signal.sosfilt`, so results are the same
    to the bit.

    Why not ``scipy.signal.sosfilt`` itself: importing ``scipy.signal`` runs its ``__init__``, which
    imports every submodule (``scipy.stats``, ``scipy.interpolate``, ...): 1-1.5 s of a loudness
    worker's 2-3 s start-up, for one loop. The kernel's extension module (``scipy/signal/_sosfilt``)
    is loaded from its file without that ``__init__`` (private to SciPy, present since SciPy 1.2),
    or taken from ``scipy.signal`` when that is imported already (not merely deferred, see
    :mod:`mirflow.core.imports`). Where it cannot be found or loaded (another SciPy layout) the
    public function is used, with the same contract.
    """
    from ..core.imports import imported

    if imported("scipy.signal"):
        try:
            from scipy.signal._sosfilt import _sosfilt
            return _sosfilt
        except ImportError:  # pragma: no cover - another SciPy layout
            return _public_sos_kernel
    import scipy

    name = "scipy.signal._sosfilt"
    folder = Path(scipy.__file__).parent / "signal"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"_sosfilt{suffix}"
        if path.is_file():
            try:
                loader = importlib.machinery.ExtensionFileLoader(name, str(path))
                spec = importlib.util.spec_from_file_location(name, path, loader=loader)
                assert spec is not None
                module = importlib.util.module_from_spec(spec)  # not entered in sys.modules
                loader.exec_module(module)
                return module._sosfilt
            except (ImportError, AttributeError, AssertionError, OSError) as exc:
                log.debug("scipy's sosfilt kernel not loaded from %s (%s): using scipy.signal",
                          path, exc)
                break
    return _public_sos_kernel


def _public_sos_kernel(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> None:
    """:func:`sos_kernel`'s contract through the public :func:`scipy.signal.sosfilt`."""
    from scipy.signal import sosfilt

    y, zf = sosfilt(sos, x, axis=-1, zi=np.moveaxis(zi, 1, 0))
    x[...] = y
    zi[...] = np.moveaxis(zf, 0, 1)


def cell_bounds(frames: int, sr: int) -> np.ndarray:
    """Sample indices of the 100 ms grid: ``bounds[j] = floor(j * sr / 10)`` for every complete cell.

    Returns ``(cells + 1,)`` int64; cell ``j`` spans samples ``bounds[j]:bounds[j + 1]``. A trailing
    partial cell is left out (no gating block can use it).
    """
    cells = (frames * 10) // sr
    return (np.arange(cells + 1, dtype=np.int64) * sr) // 10


def k_weighted_cell_energy(samples: np.ndarray, sr: int, *, weights: np.ndarray | None = None,
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Channel-weighted energy of the K-weighted signal in each 100 ms cell.

    Parameters
    ----------
    samples : ndarray, shape (channels, n)
        The signal, full scale = 1.
    sr : int
        Sample rate in Hz.
    weights : ndarray, shape (channels,), optional
        Channel weights; :func:`channel_weights` by default.

    Returns
    -------
    energy : ndarray, shape (cells,), float64
        ``sum_i G_i * sum_{t in cell} y_i[t]**2`` where ``y_i`` is channel ``i`` K-weighted.
    bounds : ndarray, shape (cells + 1,), int64
        The cell boundaries in samples (see :func:`cell_bounds`).
    """
    channels, frames = samples.shape
    weights = channel_weights(channels) if weights is None else np.asarray(weights, np.float64)
    bounds = cell_bounds(frames, sr)
    cells = len(bounds) - 1
    energy = np.zeros(cells, dtype=np.float64)
    used = np.flatnonzero(weights)
    if cells == 0 or used.size == 0:
        return energy, bounds
    kernel = sos_kernel()
    sos = k_weighting_sos(sr)
    rows = slice(None) if used.size == channels else used   # skip zero-weight (LFE) channels
    w = weights[used]
    state = np.zeros((used.size, sos.shape[0], 2), dtype=np.float64)  # (channels, sections, 2)
    cells_per_chunk = max(1, (_CHUNK * 10) // sr)
    for c0 in range(0, cells, cells_per_chunk):
        c1 = min(cells, c0 + cells_per_chunk)
        start, stop = bounds[c0], bounds[c1]
        y = np.array(samples[rows, start:stop], dtype=np.float64, order="C")
        kernel(sos, y, state)                                # K-weighted in place, state carried on
        np.multiply(y, y, out=y)
        per_channel = np.add.reduceat(y, bounds[c0:c1] - start, axis=-1)
        energy[c0:c1] = w @ per_channel
    return energy, bounds


def _block_loudness(energy: np.ndarray, bounds: np.ndarray, cells_per_block: int,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mean-square power (weighted sum over channels) and loudness (LUFS) of every block of
    ``cells_per_block`` cells on the 100 ms hop."""
    sums = np.lib.stride_tricks.sliding_window_view(energy, cells_per_block).sum(axis=-1)
    lengths = bounds[cells_per_block:] - bounds[:-cells_per_block]
    power = sums / lengths
    with np.errstate(divide="ignore"):
        loudness = _LOUDNESS_OFFSET + 10.0 * np.log10(power)
    return power, loudness


def integrated_loudness(energy: np.ndarray, bounds: np.ndarray) -> tuple[float | None, str | None]:
    """Gated integrated loudness (BS.1770-4) from the 100 ms cell energies.

    Returns
    -------
    lufs : float or None
        Integrated loudness in LUFS; ``None`` when the audio is shorter than one 400 ms block or no
        block is above the -70 LUFS absolute gate.
    reason : str or None
        Why ``lufs`` is ``None``.
    """
    if len(energy) < _CELLS_PER_BLOCK:
        return None, "shorter than one 400 ms gating block: no integrated loudness"
    power, loudness = _block_loudness(energy, bounds, _CELLS_PER_BLOCK)
    above = loudness > ABSOLUTE_GATE_LUFS
    if not above.any():
        return None, "silent: no 400 ms block above the -70 LUFS absolute gate"
    relative_gate = (_LOUDNESS_OFFSET + 10.0 * math.log10(power[above].mean())
                     + INTEGRATED_RELATIVE_GATE_LU)
    gated = above & (loudness > relative_gate)
    return _LOUDNESS_OFFSET + 10.0 * math.log10(power[gated].mean()), None


def loudness_range(energy: np.ndarray, bounds: np.ndarray) -> tuple[float | None, str | None]:
    """Loudness range (EBU Tech 3342) from the 100 ms cell energies.

    Returns
    -------
    lra : float or None
        Loudness range in LU (>= 0); ``None`` when the audio is shorter than one 3 s short-term block
        or no short-term block is above the -70 LUFS absolute gate.
    reason : str or None
        Why ``lra`` is ``None``.
    """
    if len(energy) < _CELLS_PER_SHORT_TERM:
        return None, "shorter than one 3 s short-term block: no loudness range"
    power, loudness = _block_loudness(energy, bounds, _CELLS_PER_SHORT_TERM)
    above = loudness >= ABSOLUTE_GATE_LUFS
    if not above.any():
        return None, "silent: no 3 s short-term block above the -70 LUFS absolute gate"
    relative_gate = (_LOUDNESS_OFFSET + 10.0 * math.log10(power[above].mean())
                     + LRA_RELATIVE_GATE_LU)
    kept = np.sort(loudness[above & (loudness >= relative_gate)])
    low, high = (kept[int(math.floor((len(kept) - 1) * p / 100.0 + 0.5))] for p in LRA_PERCENTILES)
    return float(high - low), None


def true_peak(samples: np.ndarray, sr: int) -> float:
    """Linear true peak (ITU-R BS.1770-4 Annex 2, 4x oversampling), maximum over channels.

    Each channel is oversampled 4x with soxr's "HQ" resampler, streamed in chunks (the stream keeps
    the filter state, so the result equals one-shot resampling and memory stays at a few MiB).

    Why soxr rather than the Annex's example 48-tap filter: soxr's linear-phase filter is flat
    (+-0.001 dB) to 0.91 of the Nyquist frequency (20 kHz at 44.1 kHz) and rejects images by more
    than 130 dB, whereas the Annex filter is already -1.5 dB at 20 kHz. Clipped masters have their
    overs high in frequency, so the Annex filter under-reads them; ``benchmarks/RESULTS.md``
    (section 2) compares both filters with a band-limited reference and FFmpeg's ``ebur128`` on real
    music, and gives the cost.

    The result is never below the sample peak: content above the filter's passband, which the
    reconstruction drops, can make a sample exceed every interpolated value.

    Parameters
    ----------
    samples : ndarray, shape (channels, n)
        The signal, full scale = 1.
    sr : int
        Sample rate in Hz.

    Returns
    -------
    float
        ``max |x_oversampled|`` (1.0 = 0 dBTP); 0.0 for digital silence.
    """
    import soxr

    peak = float(max(samples.max(), -samples.min())) if samples.size else 0.0
    for channel in samples:
        stream = soxr.ResampleStream(sr, TRUE_PEAK_OVERSAMPLING * sr, 1, dtype="float32",
                                     quality="HQ")
        n = channel.shape[0]
        for start in range(0, n, _CHUNK):
            chunk = np.ascontiguousarray(channel[start:start + _CHUNK])
            up = stream.resample_chunk(chunk, last=start + _CHUNK >= n)
            if up.size:
                peak = max(peak, float(up.max()), float(-up.min()))
    return peak


def _db(value: float, factor: float) -> float | None:
    """``factor * log10(value)`` rounded to 3 decimals, or ``None`` for 0 (never -inf)."""
    return round(factor * math.log10(value), 3) if value > 0.0 else None


def measure(samples: np.ndarray, sr: int) -> dict[str, Any]:
    """All loudness features of a ``(channels, n)`` float signal at ``sr`` Hz (full scale = 1).

    Returns
    -------
    dict
        ``lufs`` (LUFS), ``lra`` (LU), ``true_peak_dbtp`` (dBTP), ``peak_dbfs`` (dBFS),
        ``rms_dbfs`` (dBFS, full-scale sine = -3.01), each a float rounded to 3 decimals or ``None``
        (silence, too short), plus ``"_note"`` (str) giving the reasons when any value is ``None``.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None, :]
    energy, bounds = k_weighted_cell_energy(samples, sr)
    lufs, lufs_reason = integrated_loudness(energy, bounds)
    lra, lra_reason = loudness_range(energy, bounds)

    sample_peak = float(max(samples.max(), -samples.min())) if samples.size else 0.0
    tp = true_peak(samples, sr) if sample_peak > 0.0 else 0.0
    sum_squares = 0.0
    for start in range(0, samples.shape[1], _CHUNK):   # float64 sums, one cache-sized chunk at a time
        chunk = samples[:, start:start + _CHUNK].astype(np.float64).ravel()
        sum_squares += float(chunk @ chunk)
    mean_square = sum_squares / samples.size if samples.size else 0.0

    out: dict[str, Any] = {
        "lufs": None if lufs is None else round(lufs, 3),
        "lra": None if lra is None else round(lra, 3),
        "true_peak_dbtp": _db(tp, 20.0),
        "peak_dbfs": _db(sample_peak, 20.0),
        "rms_dbfs": _db(mean_square, 10.0),
    }
    notes = [f"lufs: {lufs_reason}"] if lufs_reason else []
    if lra_reason:
        notes.append(f"lra: {lra_reason}")
    if sample_peak == 0.0:
        notes.append("peaks, rms: digital silence (every sample is 0)")
    if notes:
        out["_note"] = "; ".join(notes)
    return out


@register
class LoudnessAnalyzer(Analyzer):
    """Loudness of the full mix (see the module docstring for the standards and conventions).

    Outputs
    -------
    lufs : float or None
        Integrated loudness, ITU-R BS.1770-4, LUFS (about -70 to +3).
    lra : float or None
        Loudness range, EBU Tech 3342, LU (>= 0).
    true_peak_dbtp : float or None
        True peak, BS.1770-4 Annex 2 (4x oversampling), dBTP (can exceed 0).
    peak_dbfs : float or None
        Sample peak, dBFS (<= 0 for unclipped fixed-point sources).
    rms_dbfs : float or None
        RMS over all channels and samples, dBFS (full-scale sine = -3.01 dBFS).
    """

    name = "loudness"
    concurrent = True  # thread-safe, small working set: may run beside others
    version = 1
    device = "cpu"
    outputs = ("lufs", "lra", "true_peak_dbtp", "peak_dbfs", "rms_dbfs")

    def setup(self, device: str = "cpu") -> None:
        """Load the filter kernel and the true-peak resampler now, once per worker (start-up, not
        the first track's compute time)."""
        import soxr  # noqa: F401

        sos_kernel()

    def analyze(self, ctx: TrackContext) -> dict[str, Any]:
        """Loudness features of the decoded mix at its native rate, all channels."""
        return measure(ctx.audio.samples, ctx.sr)
