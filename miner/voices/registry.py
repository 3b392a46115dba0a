"""Synthesizers by name: ``espeak``, ``pico``, ``festival``, ``piper``.

One instance per name and process (models load on first use, so building them is cheap), whether or not its
engine is installed: ask ``available()``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from miner.voices.base import EngineSynthesizer

__all__ = ["SYNTHESIZER_NAMES", "all_synthesizers", "available_synthesizers", "get_synthesizer"]


def _espeak() -> EngineSynthesizer:
    from miner.voices.espeak import EspeakSynthesizer

    return EspeakSynthesizer()


def _pico() -> EngineSynthesizer:
    from miner.voices.pico import PicoSynthesizer

    return PicoSynthesizer()


def _festival() -> EngineSynthesizer:
    from miner.voices.festival import FestivalSynthesizer

    return FestivalSynthesizer()


def _piper() -> EngineSynthesizer:
    from miner.voices.piper import PiperSynthesizer

    return PiperSynthesizer()


_FACTORIES: dict[str, Callable[[], EngineSynthesizer]] = {
    "espeak": _espeak,
    "pico": _pico,
    "festival": _festival,
    "piper": _piper,
}
SYNTHESIZER_NAMES: tuple[str, ...] = tuple(_FACTORIES)


@functools.cache
def get_synthesizer(name: str) -> EngineSynthesizer:
    """The synthesizer called ``name`` (one of ``SYNTHESIZER_NAMES``), shared within the process.

    Raises:
        ValueError: unknown name.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown synthesizer {name!r}; choose one of {', '.join(SYNTHESIZER_NAMES)}")
    return factory()


def all_synthesizers() -> list[EngineSynthesizer]:
    """Every known synthesizer, installed or not, in ``SYNTHESIZER_NAMES`` order."""
    return [get_synthesizer(name) for name in SYNTHESIZER_NAMES]


def available_synthesizers() -> list[EngineSynthesizer]:
    """The synthesizers whose engine is installed here."""
    return [s for s in all_synthesizers() if s.available().ok]
