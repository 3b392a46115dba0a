"""How fast a speech encoder ran: audio-seconds embedded per wall-clock second of its last ``encode`` call."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from miner.types import SAMPLE_RATE

__all__ = ["EncodeSpeed", "Stopwatch"]


@dataclass(frozen=True)
class EncodeSpeed:
    """One ``encode`` call: clips, seconds of audio in them, wall-clock seconds it took."""

    clips: int
    audio_seconds: float
    seconds: float

    @property
    def audio_seconds_per_second(self) -> float:
        """Seconds of 16 kHz audio embedded per second (the real-time factor's inverse); 0 for no audio."""
        return self.audio_seconds / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        return {
            "clips": self.clips,
            "audio_seconds": self.audio_seconds,
            "seconds": self.seconds,
            "audio_seconds_per_second": self.audio_seconds_per_second,
        }


class Stopwatch:
    """Times one ``encode`` call: ``sw = Stopwatch(waves)`` at the start, ``sw.done(log, what)`` at the end."""

    def __init__(self, waveforms: Sequence[np.ndarray]) -> None:
        self.clips = len(waveforms)
        self.audio_seconds = float(sum(len(w) for w in waveforms)) / SAMPLE_RATE
        self.start = time.perf_counter()

    def done(self, log: logging.Logger, what: str) -> EncodeSpeed:
        """The measured :class:`EncodeSpeed`, logged at INFO as ``<what>: n clips, x audio-s/s``."""
        speed = EncodeSpeed(self.clips, self.audio_seconds, time.perf_counter() - self.start)
        if speed.clips:
            log.info(
                "%s: %d clips (%.1f s of audio) in %.2f s, %.1f audio-s/s",
                what,
                speed.clips,
                speed.audio_seconds,
                speed.seconds,
                speed.audio_seconds_per_second,
            )
        return speed
