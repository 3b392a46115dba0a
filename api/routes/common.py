"""Helpers shared by the routes: uploaded audio -> waveform, hits -> response models, documented errors."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import UploadFile

from api.audio_input import decode_upload
from api.schemas import ErrorBody, SpeechHit, TextHit
from api.settings import Settings
from miner.databases import Hit

__all__ = ["ERRORS", "read_audio", "speech_hit", "text_hit"]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (401, "Missing or invalid API key."),
        (404, "Unknown database."),
        (
            413,
            "Upload, audio or request too large (bytes, seconds, decoded samples, total seconds or tokens).",
        ),
        (415, "Not audio, or a codec the server cannot decode."),
        (
            422,
            "Invalid request: corrupt, empty or too short audio, an absurd sample rate, control characters in "
            "text, k out of range, malformed fields.",
        ),
        (503, "Loading, overloaded, or past the request deadline (see Retry-After)."),
    )
}


async def read_audio(upload: UploadFile, settings: Settings) -> np.ndarray:
    """Read an uploaded file (already size-limited while streaming) and decode it off the event loop.

    Returns:
        float32 (n,) mono 16 kHz.
    """
    data = await upload.read()
    return await asyncio.to_thread(
        decode_upload,
        data,
        max_seconds=settings.max_audio_seconds,
        filename=upload.filename,
        max_samples=settings.max_decoded_samples,
    )


def _common(hit: Hit) -> dict[str, Any]:
    return {
        "id": hit.id,
        "ext_id": hit.row.get("ext_id"),
        "lang": hit.row.get("lang"),
        "cosine": hit.cosine,
        "rank": hit.rank,
        "margin": hit.margin,
    }


def text_hit(hit: Hit) -> TextHit:
    return TextHit(text=str(hit.row.get("text", "")), **_common(hit))


def speech_hit(hit: Hit) -> SpeechHit:
    return SpeechHit(
        path=str(hit.row.get("path", "")),
        start=hit.row.get("start"),
        duration=hit.row.get("duration"),
        **_common(hit),
    )
