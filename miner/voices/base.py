"""The interface every synthesizer wrapper shares, and the checks and conversions they all need.

A synthesizer turns ``(text, voice)`` into 16 kHz mono float32 speech. Each engine module (``espeak.py``,
``pico.py``, ``festival.py``, ``piper.py``) subclasses :class:`EngineSynthesizer`, which validates the
arguments, resamples the engine's output with soxr, and applies the rate or pitch change the engine cannot
make itself with the DSP of :mod:`miner.voices.dsp` (``native_controls`` says which are native).

Errors: bad arguments (unknown voice, empty text, rate or pitch out of range) raise ``ValueError``; an engine
that is missing or fails raises :class:`SynthesisError` (a ``RuntimeError``), its message naming the engine,
voice and cause.
"""

from __future__ import annotations

import abc
import logging
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from miner.types import SAMPLE_RATE
from miner.voices import dsp

log = logging.getLogger(__name__)

__all__ = [
    "CONTROL_RANGE",
    "SAMPLE_RATE",
    "Availability",
    "EngineSynthesizer",
    "SynthesisError",
    "Synthesizer",
    "lang_matches",
]

# rate and pitch multipliers every synthesizer accepts (engines clamp further only where they must).
CONTROL_RANGE = (0.5, 2.0)


class SynthesisError(RuntimeError):
    """The engine is not installed, or it failed or produced no audio for this text."""


class Availability(NamedTuple):
    """Whether a synthesizer can run here; ``reason`` says why not (empty when ``ok``). Unpacks as a pair."""

    ok: bool
    reason: str = ""


@runtime_checkable
class Synthesizer(Protocol):
    """What the training-data driver calls. See :class:`EngineSynthesizer` for the shared behaviour."""

    name: str

    def available(self) -> Availability: ...

    def languages(self) -> list[str]: ...

    def voices(self, lang: str | None = None) -> list[str]: ...

    def native_controls(self, voice: str) -> frozenset[str]: ...

    def speak(self, text: str, voice: str, *, rate: float = 1.0, pitch: float = 1.0) -> np.ndarray: ...


def lang_matches(voice_lang: str, wanted: str) -> bool:
    """Whether a voice of language ``voice_lang`` (``en-us``) serves ``wanted`` (``en``, ``en-US``, ``EN``).

    The primary subtags must be equal; a region in ``wanted`` must equal the voice's too.
    """
    have = voice_lang.lower().replace("_", "-").split("-")
    want = wanted.lower().replace("_", "-").split("-")
    return have[0] == want[0] and (len(want) == 1 or have[: len(want)] == want)


class EngineSynthesizer(abc.ABC):
    """Shared checks around one engine's ``_render``.

    Subclasses set ``name`` and implement ``available``, ``_voice_languages`` (voice id -> language code),
    ``native_controls`` and ``_render``. ``speak`` is the same for all.
    """

    name: str = ""

    @abc.abstractmethod
    def available(self) -> Availability:
        """Whether the engine is installed here (cheap: never loads a model)."""

    @abc.abstractmethod
    def _voice_languages(self) -> dict[str, str]:
        """Voice id -> language code (``en-us``, ``it``), for every voice installed here."""

    @abc.abstractmethod
    def native_controls(self, voice: str) -> frozenset[str]:
        """The subset of ``{"rate", "pitch"}`` the engine changes itself for ``voice``; the rest is DSP."""

    @abc.abstractmethod
    def _render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        """Run the engine; ``rate`` / ``pitch`` are 1.0 unless native.

        Returns:
            ``(samples, sample_rate)``: float samples of shape (n,) or (n, channels).

        Raises:
            SynthesisError: the engine failed.
        """

    def languages(self) -> list[str]:
        """Primary language codes (``en``, ``fr``) with at least one voice here, sorted; empty if unavailable."""
        if not self.available().ok:
            return []
        return sorted({lang.split("-")[0] for lang in self._voice_languages().values()})

    def voices(self, lang: str | None = None) -> list[str]:
        """Voice ids for ``lang`` (``en``, or ``en-us`` for one region), or all when ``None``; sorted, so a seeded
        choice among them is stable. Empty when the engine is not installed."""
        if not self.available().ok:
            return []
        table = self._voice_languages()
        return sorted(v for v, vl in table.items() if lang is None or lang_matches(vl, lang))

    def check_voice(self, voice: str) -> None:
        """Raise ``ValueError`` (naming a few valid voices) unless ``voice`` is installed here."""
        table = self._voice_languages()
        if voice not in table:
            sample = ", ".join(sorted(table)[:8])
            raise ValueError(
                f"{self.name}: unknown voice {voice!r}; choose one of voices() (e.g. {sample}"
                f"{', ...' if len(table) > 8 else ''})"
            )

    def speak(self, text: str, voice: str, *, rate: float = 1.0, pitch: float = 1.0) -> np.ndarray:
        """Speak ``text`` with ``voice``.

        Args:
            text: the sentence (or paragraph); must hold a letter or digit.
            voice: one of ``voices()``.
            rate: speaking-rate multiplier in ``CONTROL_RANGE`` (1.0 = the voice's default; 1.2 = 20% faster).
            pitch: pitch multiplier in ``CONTROL_RANGE`` (1.0 = the voice's default F0).

        Returns:
            float32 array of shape (n,), mono, 16 kHz, in [-1, 1], finite.

        Raises:
            ValueError: empty text, unknown voice, rate or pitch out of range.
            SynthesisError: the engine is missing, failed, or produced no audio.
        """
        if not any(ch.isalnum() for ch in text):
            raise ValueError(f"{self.name}: nothing to speak in {text[:60]!r} (no letter or digit)")
        for what, value in (("rate", rate), ("pitch", pitch)):
            if not (CONTROL_RANGE[0] <= value <= CONTROL_RANGE[1]):
                raise ValueError(f"{self.name}: {what}={value} is outside {CONTROL_RANGE}; pass a multiplier")
        ok, why = self.available()
        if not ok:
            raise SynthesisError(f"{self.name} is not available: {why}")
        self.check_voice(voice)
        native = self.native_controls(voice)
        samples, sr = self._render(
            text, voice, rate if "rate" in native else 1.0, pitch if "pitch" in native else 1.0
        )
        audio = dsp.to_mono(samples)
        if audio.size == 0:
            raise SynthesisError(f"{self.name} voice {voice!r} produced no audio for {text[:60]!r}")
        audio = dsp.resample(audio, sr, SAMPLE_RATE)
        if "pitch" not in native and pitch != 1.0:
            audio = dsp.pitch_shift(audio, 12.0 * float(np.log2(pitch)))
        if "rate" not in native and rate != 1.0:
            audio = dsp.time_stretch(audio, rate)
        audio = dsp.peak_limit(audio, 1.0)  # resampling and DSP may overshoot a full-scale engine output
        if not np.any(audio):
            raise SynthesisError(f"{self.name} voice {voice!r} produced silence for {text[:60]!r}")
        return audio
