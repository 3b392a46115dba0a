"""Encoders of the shared space: SAMU-XLSR for speech, sentence-transformers / e5 for text.

Imports are lazy so that ``import miner.encoders`` stays cheap and torch loads only when a model does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SpeechEncoder", "SpeechEncoderConfig", "TextEncoder", "load_speech_encoder", "load_text_encoder"]


def __getattr__(name: str) -> Any:
    if name in ("SpeechEncoder", "SpeechEncoderConfig", "load_speech_encoder"):
        from miner.encoders import samu

        return getattr(samu, name)
    if name in ("TextEncoder", "load_text_encoder"):
        from miner.encoders import text

        return getattr(text, name)
    raise AttributeError(name)
