"""Signal operations the synthesizers and the augmentation chain share: resampling, speed, time stretch, pitch.

All functions take and return float32 mono arrays of shape (n,) at 16 kHz unless a rate is given, never
modify their input, and are deterministic (no randomness).

- ``change_speed``: resampling (soxr), so duration and pitch change together (Kaldi-style speed perturbation).
- ``time_stretch``: WSOLA (waveform-similarity overlap-add; Verhelst and Roelands 1993): 32 ms Hann frames at
  50% overlap, each input frame chosen within +-10 ms of its nominal place to best continue the previous one,
  so the pitch is kept. Clean on speech for factors 0.7-1.4; no phase-vocoder "phasiness".
- ``pitch_shift``: resample by the pitch ratio, then WSOLA back to the original length. Formants move with
  the pitch (a 2-semitone shift sounds like a slightly different speaker, a 6-semitone one like a child or
  a giant): fine for training variety, not a natural voice conversion.

Speed on one core (this machine, other jobs running): ``time_stretch`` 160-210x real time, ``pitch_shift``
~175x.
"""

from __future__ import annotations

import numpy as np
import soxr

from miner.types import SAMPLE_RATE

__all__ = [
    "change_speed",
    "fit_length",
    "peak_limit",
    "pitch_shift",
    "resample",
    "time_stretch",
    "to_mono",
]


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) samples of any float/int dtype -> float32 (n,) (channels averaged; int16 scaled)."""
    arr = np.asarray(samples)
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 2:
        arr = arr.mean(axis=1, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"expected samples of shape (n,) or (n, channels), got {arr.shape}")
    return arr


def resample(audio: np.ndarray, sr_in: float, sr_out: float = SAMPLE_RATE) -> np.ndarray:
    """soxr HQ resampling of float32 (n,) audio; a copy when the rates are equal."""
    x = np.ascontiguousarray(audio, dtype=np.float32)
    if sr_in == sr_out:
        return x.copy()
    return np.asarray(soxr.resample(x, sr_in, sr_out), dtype=np.float32)


def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad float32 (m,) audio to exactly ``n`` samples."""
    if len(audio) >= n:
        return audio[:n].copy()
    return np.pad(audio, (0, n - len(audio))).astype(np.float32, copy=False)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster: duration / factor, pitch x factor (resampling).

    Returns:
        float32 (round(n / factor),).
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    if factor == 1.0:
        return np.array(audio, dtype=np.float32)
    out = resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE)
    return fit_length(out, int(round(len(audio) / factor)))


def time_stretch(audio: np.ndarray, factor: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """WSOLA: ``factor`` times faster with the pitch kept (``factor`` 1.25 -> 80% of the duration).

    Args:
        audio: float32 (n,).
        factor: > 0; 0.5-2.0 is the useful range for speech.
        sample_rate: sets the frame (32 ms) and search (+-10 ms) sizes.

    Returns:
        float32 (round(n / factor),).
    """
    if factor <= 0:
        raise ValueError(f"time-stretch factor must be > 0, got {factor}")
    x = np.asarray(audio, dtype=np.float32)
    n_out = int(round(len(x) / factor))
    if factor == 1.0 or len(x) == 0:
        return fit_length(x.copy(), n_out)
    win = 1 << int(np.round(np.log2(0.032 * sample_rate)))  # 512 at 16 kHz
    hop = win // 2
    tol = int(0.010 * sample_rate)
    window = (np.sin(np.pi * (np.arange(win) + 0.5) / win) ** 2).astype(np.float32)  # sums to 1 at 50%
    n_frames = n_out // hop + 2
    pad_end = int(n_frames * hop * factor) + win + 2 * tol + 1
    xp = np.pad(x, (tol, max(0, pad_end - len(x))))
    out = np.zeros(n_frames * hop + win, dtype=np.float32)
    wsum = np.zeros_like(out)
    prev = tol
    step = 2  # correlate every second sample: same choices in practice, twice as fast
    for k in range(n_frames):
        nominal = tol + int(round(k * hop * factor))
        if k == 0:
            pos = nominal
        else:
            target = xp[prev + hop : prev + hop + win : step]
            lo = nominal - tol
            region = xp[lo : nominal + tol + win]
            frames = np.lib.stride_tricks.sliding_window_view(region, win)[:, ::step]
            pos = lo + int(np.argmax(frames @ target))
        out[k * hop : k * hop + win] += window * xp[pos : pos + win]
        wsum[k * hop : k * hop + win] += window
        prev = pos
    stretched = (out / np.maximum(wsum, 1e-3)).astype(np.float32)
    return fit_length(stretched, n_out)


def pitch_shift(audio: np.ndarray, semitones: float) -> np.ndarray:
    """Shift the pitch by ``semitones`` and keep the duration (resample, then WSOLA back).

    Returns:
        float32 of the input's shape (n,).
    """
    x = np.asarray(audio, dtype=np.float32)
    if semitones == 0:
        return x.copy()
    ratio = float(2.0 ** (semitones / 12.0))
    faster = resample(x, SAMPLE_RATE * ratio, SAMPLE_RATE)  # pitch x ratio, duration / ratio
    return fit_length(time_stretch(faster, 1.0 / ratio), len(x))


def peak_limit(audio: np.ndarray, peak: float = 0.98) -> np.ndarray:
    """Scale float32 (n,) audio down (one gain for the whole clip) so that max |x| <= ``peak``; finite output."""
    x = np.nan_to_num(np.asarray(audio, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(np.max(np.abs(x))) if x.size else 0.0
    if top > peak:
        x = x * np.float32(peak / top)
    return x.astype(np.float32, copy=False)
