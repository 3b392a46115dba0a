"""Helpers shared by test_voices.py and test_augment.py: a seeded voiced test signal and an F0 estimate."""

from __future__ import annotations

import numpy as np

from miner.types import SAMPLE_RATE


def harmonic_tone(seconds: float = 3.0, f0: float = 140.0, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """A voiced, speech-like float32 (n,) signal at 16 kHz: 15 harmonics of ``f0`` with a slow +-15% glide,
    a syllable-rate (4 Hz) amplitude envelope and a little seeded noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    freq = f0 * (1.0 + 0.15 * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, np.pi)))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    x = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 16))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t) ** 2
    x = x * envelope + 0.01 * rng.standard_normal(len(t))
    return (level * x / np.max(np.abs(x))).astype(np.float32)


def median_f0(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Median F0 (Hz) over voiced 40 ms frames by autocorrelation (60-500 Hz); NaN when nothing is voiced."""
    frame, hop = int(0.04 * sample_rate), int(0.01 * sample_rate)
    lo, hi = int(sample_rate / 500), int(sample_rate / 60)
    loud = 0.05 * float(np.max(np.abs(audio))) if len(audio) else 0.0
    out = []
    for start in range(0, len(audio) - frame, hop):
        x = audio[start : start + frame].astype(np.float64)
        x = x - x.mean()
        if np.sqrt(np.mean(x**2)) < loud:
            continue
        ac = np.correlate(x, x, "full")[frame - 1 :]
        k = lo + int(np.argmax(ac[lo:hi]))
        if ac[k] > 0.5 * ac[0]:
            out.append(sample_rate / k)
    return float(np.median(out)) if out else float("nan")
