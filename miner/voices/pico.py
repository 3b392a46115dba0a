"""SVOX Pico (the Android 2.x voices, HMM synthesis) through the PyPI package ``py-nanotts`` (C extension,
lingware inside the wheel, no network).

Voices (one per language): ``en-US``, ``en-GB``, ``de-DE``, ``es-ES``, ``fr-FR``, ``it-IT``. Controls, both
native: ``rate`` is Pico's speed multiplier, ``pitch`` its pitch multiplier (F0 x1.4 measured x1.39). The
volume is set to 0.5: at Pico's default volume about 0.4% of the samples of an ordinary English sentence
clip at full scale.

Output: 16 kHz int16 PCM. Not bit-for-bit deterministic: within one process, repeated calls on the same text
came out equal or differing in a few hundred samples by at most 74/32768 (below -50 dB; some state inside the
library), so treat Pico clips as reproducible in content, not in bytes. Measured speed
(``bench/bench_voices.py``, one core, other jobs running): 110-210x real time; 14-18 characters per second
of speech at rate 1.0.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from miner.voices.base import Availability, EngineSynthesizer, SynthesisError

__all__ = ["PICO_VOICES", "PicoSynthesizer"]

PICO_VOICES = ("de-DE", "en-GB", "en-US", "es-ES", "fr-FR", "it-IT")
VOLUME = 0.5


class PicoSynthesizer(EngineSynthesizer):
    """SVOX Pico via ``py_nanotts.NanoTTS``; one voice per language, rate and pitch native."""

    name = "pico"

    def __init__(self) -> None:
        self._tts: Any = None

    def available(self) -> Availability:
        """Installed when the ``py-nanotts`` package is (``pip install py-nanotts``, or the ``voices`` extra)."""
        if importlib.util.find_spec("py_nanotts") is None:
            return Availability(False, "the py-nanotts package is not installed: pip install py-nanotts")
        return Availability(True)

    def _voice_languages(self) -> dict[str, str]:
        return {v: v.lower() for v in PICO_VOICES}

    def native_controls(self, voice: str) -> frozenset[str]:
        """Both: Pico's speed and pitch multipliers."""
        return frozenset({"rate", "pitch"})

    def _render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        if self._tts is None:
            try:
                from py_nanotts import NanoTTS
            except ImportError as exc:
                raise SynthesisError(f"py-nanotts failed to load: {exc}") from exc
            self._tts = NanoTTS()
        try:
            pcm = self._tts.speak(text, voice=voice, speed=rate, pitch=pitch, volume=VOLUME)
        except (ValueError, RuntimeError) as exc:
            raise SynthesisError(f"pico voice {voice!r} failed on {text[:60]!r}: {exc}") from exc
        return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, 16000
