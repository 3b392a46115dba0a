"""Uploaded audio -> 16 kHz waveform, with each way it can fail told apart (the edge maps them to 413/415/422).

``miner.audio`` raises one :class:`~miner.audio.AudioError` for every problem; a client needs to know
whether to convert the file (unsupported format), fix it (corrupt or empty) or shorten it (too long), so the
upload is checked in steps: empty body, header readable (format), sample rate, duration and decoded size
(rate x channels x seconds) from the header, then decoding (which never reads past the decoded-size bound),
then the length after resampling (at least ``miner.audio.MIN_SAMPLES``).
"""

from __future__ import annotations

import math

import numpy as np

from miner.audio import (
    AudioError,
    AudioTooLong,
    check_sample_rate,
    decoded_size_message,
    load_audio,
    probe,
    supported_formats,
)
from miner.types import SAMPLE_RATE

__all__ = ["AudioTooLong", "InvalidAudio", "UnsupportedAudio", "decode_upload", "default_max_samples"]

# A recording at up to 96 kHz in stereo passes the decoded-size bound whatever its length within the limit.
_BOUND_RATE, _BOUND_CHANNELS = 96_000, 2


def default_max_samples(max_seconds: float) -> int:
    """Decoded samples (frames x channels) allowed for clips of up to ``max_seconds``: 96 kHz stereo."""
    return int(math.ceil(max_seconds * _BOUND_RATE * _BOUND_CHANNELS))


class UnsupportedAudio(AudioError):
    """The bytes are not audio in a format the server decodes."""


class InvalidAudio(AudioError):
    """Audio in a known format that is empty, truncated, corrupt or holds no usable samples."""


def decode_upload(
    data: bytes, *, max_seconds: float, filename: str | None = None, max_samples: int | None = None
) -> np.ndarray:
    """Decode an uploaded file to float32 mono 16 kHz samples.

    Args:
        data: the file's bytes.
        max_seconds: refuse longer audio (from the header when it tells the length, before decoding).
        filename: the client's file name, for messages.
        max_samples: refuse audio that decodes to more samples (frames x channels at the stored rate), from
            the header before decoding (default :func:`default_max_samples` of ``max_seconds``).

    Returns:
        float32 (n,) at 16 kHz, n >= ``miner.audio.MIN_SAMPLES``.

    Raises:
        InvalidAudio: empty upload, no samples, truncated or corrupt data, NaN samples, an absurd sample
            rate, fewer than ``miner.audio.MIN_SAMPLES`` samples at 16 kHz.
        UnsupportedAudio: not an audio file libsndfile reads.
        AudioTooLong: longer than ``max_seconds``, or more than ``max_samples`` decoded samples.
    """
    if max_samples is None:
        max_samples = default_max_samples(max_seconds)
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
    try:
        check_sample_rate(info.sample_rate, label)
    except AudioError as exc:
        raise InvalidAudio(str(exc)) from exc
    if math.isfinite(info.duration) and info.duration > max_seconds:
        raise AudioTooLong(
            f"{label} lasts {info.duration:.1f} s, over the limit of {max_seconds:g} s: cut it into shorter "
            "clips (or raise MINER_MAX_AUDIO_SECONDS on the server)"
        )
    if math.isfinite(info.duration) and info.frames * max(1, info.channels) > max_samples:
        raise AudioTooLong(
            decoded_size_message(label, info.frames, info.sample_rate, info.channels, max_samples)
            + " (or raise MINER_MAX_DECODED_SAMPLES on the server)"
        )
    try:
        wav = load_audio(data, max_seconds=max_seconds, max_samples=max_samples)
    except AudioError as exc:
        if isinstance(exc, AudioTooLong):
            # the header did not tell the length and decoding ran past a limit
            raise AudioTooLong(f"{label}: {exc}") from exc
        raise InvalidAudio(f"{label} cannot be used: {exc}") from exc
    if wav.shape[0] > max_seconds * SAMPLE_RATE + 1:  # resampling rounding aside, the header lied
        raise AudioTooLong(
            f"{label} lasts more than the limit of {max_seconds:g} s: cut it into shorter clips"
        )
    return wav


def _reason(exc: BaseException) -> str:
    # libsndfile's own words when it refused the bytes; else miner.audio's message
    return str(getattr(exc.__cause__, "error_string", None) or exc)
