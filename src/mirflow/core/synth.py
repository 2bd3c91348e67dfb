"""Synthetic music with known answers, for tests, benchmarks and ``mirflow demo``.

Everything here is deterministic (seeded with :func:`numpy.random.default_rng`) and uses numpy only
(plus pyloudnorm when a loudness target is asked for), so a test can build a song in a few
milliseconds per second of audio and assert the tempo, key, beat times or stem content it was built
with.

- :func:`synth_song` builds a 4/4 song at an exact tempo and key: drums (kick on beats 1 and 3, snare
  on 2 and 4, closed hi-hat on every eighth note, a few seeded ghost kicks), a bass line playing the
  chord roots on every beat, and a chord progression (one chord per bar) idiomatic for the key.
  Beat ``k`` (0-based) starts exactly at ``k * 60 / bpm`` seconds; bar lines fall on every fourth beat.
- :func:`synth_song_stems` returns the same song as separate ``drums``, ``bass`` and ``other`` stems
  whose sum is exactly the mix.
- :func:`synth_chords` builds chords (and their bass roots) without drums, for key tests.
- :func:`beat_times` gives the true beat grid of a song.

Arrays are ``float32`` and channels-first: ``(2, n)`` stereo at ``sr`` Hz.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Pitch-class names, sharps only, index = semitones above C.
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLATS = {"Db": 1, "Eb": 3, "Gb": 6, "Ab": 8, "Bb": 10, "Cb": 11, "Fb": 4, "E#": 5, "B#": 0}

# Chord progressions, one chord per bar: (semitones above the tonic, quality).
# Minor keys use the harmonic-minor dominant (major V, with the leading tone), as most tonal music does.
_PROGRESSIONS: dict[str, tuple[tuple[tuple[int, str], ...], ...]] = {
    "major": (
        ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),    # I  V  vi IV
        ((0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")),    # I  IV V  I
        ((0, "maj"), (9, "min"), (5, "maj"), (7, "maj")),    # I  vi IV V
        ((0, "maj"), (2, "min"), (7, "maj"), (0, "maj")),    # I  ii V  I
    ),
    "minor": (
        ((0, "min"), (5, "min"), (7, "maj"), (0, "min")),    # i  iv V  i
        ((0, "min"), (8, "maj"), (5, "min"), (7, "maj")),    # i  VI iv V
        ((0, "min"), (7, "maj"), (8, "maj"), (5, "min")),    # i  V  VI iv
        ((0, "min"), (5, "min"), (0, "min"), (7, "maj")),    # i  iv i  V
    ),
}
_TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7)}


def pitch_class(key: str | int) -> int:
    """Pitch class (0 = C ... 11 = B) of a key name such as ``"F#"``, ``"Bb"`` or an int."""
    if isinstance(key, (int, np.integer)):
        return int(key) % 12
    name = key.strip()
    name = name[:1].upper() + name[1:]
    if name in PITCH_CLASSES:
        return PITCH_CLASSES.index(name)
    if name in _FLATS:
        return _FLATS[name]
    raise ValueError(f"unknown key {key!r}; use one of {', '.join(PITCH_CLASSES)} (or flats like Bb)")


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def beat_times(*, bpm: float, seconds: float) -> np.ndarray:
    """The true beat times (s) of a song built by :func:`synth_song` with these arguments."""
    period = 60.0 / bpm
    return np.arange(0.0, seconds - 1e-9, period)


# -- instruments -----------------------------------------------------------------------------------
def _kick(sr: int) -> np.ndarray:
    t = np.arange(int(0.35 * sr)) / sr
    freq = 48.0 + 110.0 * np.exp(-t / 0.025)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    body = np.sin(phase) * np.exp(-t / 0.11)
    click = np.exp(-t / 0.002) * 0.5
    return (body + click).astype(np.float64)


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.25 * sr)) / sr
    tone = 0.45 * np.sin(2 * np.pi * 190.0 * t) * np.exp(-t / 0.05)
    noise = rng.standard_normal(t.size)
    noise = np.diff(noise, prepend=0.0) * 0.5  # tilt towards the highs
    return tone + 0.55 * noise * np.exp(-t / 0.07)


def _hihat(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.06 * sr)) / sr
    noise = rng.standard_normal(t.size)
    noise = np.diff(np.diff(noise, prepend=0.0), prepend=0.0) * 0.25  # second difference: high-pass
    return noise * np.exp(-t / 0.012)


def _add(buf: np.ndarray, start: int, sound: np.ndarray, gain: float) -> None:
    if start >= buf.size:
        return
    end = min(buf.size, start + sound.size)
    buf[start:end] += gain * sound[: end - start]


def _tone(freqs: Sequence[float], n: int, sr: int, rng: np.random.Generator, *, harmonics: int,
          attack: float, decay: float) -> np.ndarray:
    """Sum of harmonic tones (amplitude 1/k), with a linear attack and an exponential decay.

    Harmonics come from the Chebyshev recursion ``sin(k x) = 2 cos(x) sin((k-1) x) - sin((k-2) x)``:
    one ``sin`` and one ``cos`` per note instead of one ``sin`` per harmonic.
    """
    t = np.arange(n) / sr
    out = np.zeros(n)
    nyq = sr / 2.0
    for f0 in freqs:
        x = 2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi)
        s_prev, s_cur, two_cos = np.zeros(n), np.sin(x), 2.0 * np.cos(x)
        for k in range(1, harmonics + 1):
            if f0 * k >= nyq * 0.95:
                break
            out += s_cur / k
            s_prev, s_cur = s_cur, two_cos * s_cur - s_prev
    env = np.minimum(1.0, t / attack) * np.exp(-t / decay)
    release = min(n, int(0.02 * sr))  # 20 ms fade out: no click at the note end
    if release:
        env[n - release:] *= np.linspace(1.0, 0.0, release)
    return out * env


# -- songs -----------------------------------------------------------------------------------------
def _check(bpm: float, seconds: float, sr: int) -> None:
    if not (bpm > 0 and np.isfinite(bpm)):
        raise ValueError(f"bpm must be positive, got {bpm}")
    if not (seconds > 0 and np.isfinite(seconds)):
        raise ValueError(f"seconds must be positive, got {seconds}")
    if sr < 4000:
        raise ValueError(f"sr must be at least 4000 Hz, got {sr}")


def _chords_for(tonic: int, scale: str, rng: np.random.Generator,
                progression: Sequence[tuple[int, str]] | None) -> Sequence[tuple[int, str]]:
    if scale not in _PROGRESSIONS:
        raise ValueError(f"scale must be 'major' or 'minor', got {scale!r}")
    if progression is None:
        options = _PROGRESSIONS[scale]
        progression = options[int(rng.integers(len(options)))]
    return [((tonic + degree) % 12, quality) for degree, quality in progression]


def _render_harmony(chords: Sequence[tuple[int, str]], *, n: int, sr: int, bar_s: float,
                    beat_s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Chord pads (one chord per bar) and a bass playing the root on every beat; mono each."""
    other = np.zeros(n)
    bass = np.zeros(n)
    n_bars = int(np.ceil(n / (bar_s * sr)))
    for b in range(n_bars):
        root, quality = chords[b % len(chords)]
        start = int(round(b * bar_s * sr))
        length = min(n - start, int(round(bar_s * sr)))
        if length <= 0:
            break
        # Close voicing around middle C (MIDI 60..71 for the root).
        notes = [60 + root + iv for iv in _TRIADS[quality]]
        pad = _tone([_midi_hz(m) for m in notes], length, sr, rng, harmonics=6, attack=0.02,
                    decay=bar_s * 1.5)
        other[start:start + length] += 0.22 * pad
        for beat in range(4):
            bs = start + int(round(beat * beat_s * sr))
            blen = min(n - bs, int(round(0.9 * beat_s * sr)))
            if blen <= 0:
                break
            note = _tone([_midi_hz(36 + root)], blen, sr, rng, harmonics=4, attack=0.005,
                         decay=beat_s * 0.6)
            bass[bs:bs + blen] += 0.45 * note
    return bass, other


def _render_drums(*, n: int, sr: int, beat_s: float, rng: np.random.Generator) -> np.ndarray:
    drums_kick = np.zeros(n)
    drums_snare = np.zeros(n)
    drums_hat = np.zeros(n)
    kick, snare, hat = _kick(sr), _snare(sr, rng), _hihat(sr, rng)
    sixteenth = beat_s / 4.0
    n_steps = int(np.ceil(n / (sixteenth * sr)))
    ghost_steps = {10, 14} if rng.random() < 0.5 else {14}
    for step in range(n_steps):
        pos = int(round(step * sixteenth * sr))
        in_bar = step % 16
        vel = 1.0 + rng.uniform(-0.08, 0.08)
        if in_bar in (0, 8):
            _add(drums_kick, pos, kick, 0.9 * vel)
        elif in_bar in ghost_steps and rng.random() < 0.35:
            _add(drums_kick, pos, kick, 0.5 * vel)
        if in_bar in (4, 12):
            _add(drums_snare, pos, snare, 0.6 * vel)
        if in_bar % 2 == 0:
            accent = 1.0 if in_bar % 4 == 0 else 0.6
            _add(drums_hat, pos, hat, 0.35 * accent * vel)
    return np.stack([drums_kick + 0.9 * drums_snare + 0.7 * drums_hat,
                     drums_kick + 0.9 * drums_snare + 1.0 * drums_hat])


def synth_song_stems(*, bpm: float, key: str | int = "C", scale: str = "major", seconds: float = 10.0,
                     sr: int = 44100, seed: int = 0, loudness_lufs: float | None = None,
                     progression: Sequence[tuple[int, str]] | None = None) -> dict[str, np.ndarray]:
    """A synthetic 4/4 song as separate stems ``{"drums", "bass", "other"}``, each ``(2, n)`` float32.

    Parameters
    ----------
    bpm : float
        Exact tempo in beats per minute; beat ``k`` starts at ``k * 60 / bpm`` s.
    key, scale : str
        Tonic (``"C"``, ``"F#"``, ``"Bb"``, or a pitch class 0-11) and ``"major"`` / ``"minor"``.
    seconds : float
        Duration in seconds (``n = round(seconds * sr)`` samples).
    sr : int
        Sample rate in Hz.
    seed : int
        Seeds the chord progression choice, ghost kicks, velocities, noise and phases.
    loudness_lufs : float, optional
        Integrated loudness (ITU-R BS.1770, LUFS) of the mix; by default the mix peaks at -1 dBFS.
        The same gain is applied to every stem, so the stems always sum to the mix.
    progression : sequence of (semitones above tonic, "maj" | "min"), optional
        One chord per bar, cycled; by default one of four idiomatic progressions for the scale.
    """
    _check(bpm, seconds, sr)
    rng = np.random.default_rng(seed)
    tonic = pitch_class(key)
    chords = _chords_for(tonic, scale, rng, progression)
    n = int(round(seconds * sr))
    beat_s = 60.0 / bpm
    bass, other = _render_harmony(chords, n=n, sr=sr, bar_s=4 * beat_s, beat_s=beat_s, rng=rng)
    drums = _render_drums(n=n, sr=sr, beat_s=beat_s, rng=rng)
    stems = {
        "drums": drums,
        "bass": np.stack([bass, bass]),
        "other": np.stack([0.8 * other, 1.0 * other]),  # pads slightly right of centre
    }
    return _normalise(stems, sr=sr, loudness_lufs=loudness_lufs)


def _normalise(stems: dict[str, np.ndarray], *, sr: int,
               loudness_lufs: float | None) -> dict[str, np.ndarray]:
    mix = sum(stems.values())
    if loudness_lufs is None:
        peak = float(np.max(np.abs(mix))) if mix.size else 0.0
        gain = 10 ** (-1.0 / 20) / peak if peak > 0 else 1.0
    else:
        import pyloudnorm

        meter = pyloudnorm.Meter(sr)
        current = meter.integrated_loudness(mix.T)
        gain = 10 ** ((loudness_lufs - current) / 20) if np.isfinite(current) else 1.0
    return {name: (gain * s).astype(np.float32) for name, s in stems.items()}


def synth_song(*, bpm: float, key: str | int = "C", scale: str = "major", seconds: float = 10.0,
               sr: int = 44100, seed: int = 0, loudness_lufs: float | None = None,
               progression: Sequence[tuple[int, str]] | None = None) -> np.ndarray:
    """The mix of :func:`synth_song_stems` (same arguments): ``(2, n)`` float32 stereo at ``sr`` Hz."""
    stems = synth_song_stems(bpm=bpm, key=key, scale=scale, seconds=seconds, sr=sr, seed=seed,
                             loudness_lufs=loudness_lufs, progression=progression)
    return (stems["drums"] + stems["bass"] + stems["other"]).astype(np.float32)


def synth_chords(key: str | int, scale: str = "major", *, seconds: float = 8.0, sr: int = 22050,
                 seed: int = 0, bpm: float = 120.0,
                 progression: Sequence[tuple[int, str]] | None = None) -> np.ndarray:
    """A chord progression in ``key`` / ``scale`` with its bass roots, no drums: ``(2, n)`` float32.

    One chord per bar of four beats at ``bpm``; the mix peaks at -1 dBFS. See
    :func:`synth_song_stems` for the parameters.
    """
    _check(bpm, seconds, sr)
    rng = np.random.default_rng(seed)
    chords = _chords_for(pitch_class(key), scale, rng, progression)
    n = int(round(seconds * sr))
    beat_s = 60.0 / bpm
    bass, other = _render_harmony(chords, n=n, sr=sr, bar_s=4 * beat_s, beat_s=beat_s, rng=rng)
    stems = {"bass": np.stack([bass, bass]), "other": np.stack([other, other])}
    out = _normalise(stems, sr=sr, loudness_lufs=None)
    return (out["bass"] + out["other"]).astype(np.float32)


__all__ = ["PITCH_CLASSES", "pitch_class", "beat_times", "synth_song", "synth_song_stems",
           "synth_chords"]
