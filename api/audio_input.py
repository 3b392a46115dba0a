"""Uploaded audio -> 16 kHz waveform, with each way it can fail told apart (the edge maps them to 413/415/422).

``miner.audio`` raises one :class:`~miner.audio.AudioError` for every problem; a client needs to know
whether to convert the file (unsupported format), fix it (corrupt or empty) or shorten it (too long), so the
upload is checked in steps: empty body, header readable (format), duration from the header, then decoding.
"""

from __future__ import annotations

import math

import numpy as np

from miner.audio import AudioError, AudioTooLong, load_audio, probe, supported_formats
from miner.types import SAMPLE_RATE

__all__ = ["AudioTooLong", "InvalidAudio", "UnsupportedAudio", "decode_upload"]


class UnsupportedAudio(AudioError):
    """The bytes are not audio in a format the server decodes."""


class InvalidAudio(AudioError):
    """Audio in a known format that is empty, truncated, corrupt or holds no usable samples."""


def decode_upload(data: bytes, *, max_seconds: float, filename: str | None = None) -> np.ndarray:
    """Decode an uploaded file to float32 mono 16 kHz samples.

    Args:
        data: the file's bytes.
        max_seconds: refuse longer audio (from the header when it tells the length, before decoding).
        filename: the client's file name, for messages.

    Returns:
        float32 (n,) at 16 kHz, n >= 1.

    Raises:
        InvalidAudio: empty upload, no samples, truncated or corrupt data, NaN samples.
        UnsupportedAudio: not an audio file libsndfile reads.
        AudioTooLong: longer than ``max_seconds``.
    """
    label = f"uploaded file {filename!r}" if filename else "the uploaded audio"
    if len(data) == 0:
        raise InvalidAudio(f"{label} is empty (0 bytes): send the audio file's contents in the 'audio' field")
    try:
        info = probe(data)
    except AudioError as exc:
        raise UnsupportedAudio(
            f"{label} is not audio in a supported format ({_reason(exc)}). Supported: {supported_formats()}. "
            "Convert it first, e.g. `ffmpeg -i INPUT -ac 1 -ar 16000 out.wav`."
        ) from exc
    if math.isfinite(info.duration) and info.duration > max_seconds:
        raise AudioTooLong(
            f"{label} lasts {info.duration:.1f} s, over the limit of {max_seconds:g} s: cut it into shorter "
            "clips (or raise MINER_MAX_AUDIO_SECONDS on the server)"
        )
    try:
        wav = load_audio(data, max_seconds=max_seconds)
    except AudioError as exc:
        if isinstance(exc, AudioTooLong):
            # the header did not tell the length and decoding ran past the limit
            raise AudioTooLong(
                f"{label} lasts more than the limit of {max_seconds:g} s: cut it into shorter clips"
            ) from exc
        raise InvalidAudio(f"{label} cannot be used: {exc}") from exc
    if wav.shape[0] > max_seconds * SAMPLE_RATE + 1:  # resampling rounding aside, the header lied
        raise AudioTooLong(
            f"{label} lasts more than the limit of {max_seconds:g} s: cut it into shorter clips"
        )
    return wav


def _reason(exc: BaseException) -> str:
    # libsndfile's own words when it refused the bytes; else miner.audio's message
    return str(getattr(exc.__cause__, "error_string", None) or exc)
