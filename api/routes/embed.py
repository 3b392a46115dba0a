"""``POST /embed/*``: vectors of the shared space, for clients that search or mine themselves.

Each request is bounded by what it costs, not only by its count of items: ``/embed/speech`` by the total
seconds of its clips (``max_request_audio_seconds``), ``/embed/text`` by the total tokens its texts make
(``max_request_tokens``, each text cut to the encoder's own limit first).
"""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Request, UploadFile

from api.admission import encode_items, speech_cost, text_cost
from api.deps import ServicesDep, SettingsDep, require_api_key
from api.routes.common import ERRORS, read_audio
from api.schemas import EmbedResponse, EmbedTextRequest
from api.search import InvalidQuery, RequestTooLarge, check_text, fit_texts
from miner.types import SAMPLE_RATE

router = APIRouter(prefix="/embed", tags=["embed"], dependencies=[Depends(require_api_key)], responses=ERRORS)


def _response(
    vectors: list[np.ndarray], services: ServicesDep, start: float, truncated: list[int] | None = None
) -> EmbedResponse:
    models = services.models
    return EmbedResponse(
        vectors=[v.astype(float).tolist() for v in vectors],
        dim=models.dim,
        space_id=models.space_id,
        took_ms=round((time.perf_counter() - start) * 1000.0, 3),
        truncated=truncated or [],
    )


@router.post("/speech", response_model=EmbedResponse)
async def embed_speech(
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    audio: Annotated[
        list[UploadFile], File(description="One or more audio clips; one vector each, in order.")
    ],
) -> EmbedResponse:
    """Embed uploaded clips with the speech encoder (they share forward passes with other requests)."""
    start = time.perf_counter()
    if len(audio) > settings.max_texts:
        raise InvalidQuery(f"{len(audio)} files in one request, over the limit of {settings.max_texts}")
    wavs: list[np.ndarray] = []
    seconds = 0.0
    with services.speech_batcher.announce():
        for upload in audio:
            wav = await read_audio(upload, settings)
            seconds += len(wav) / SAMPLE_RATE
            if seconds > settings.max_request_audio_seconds:
                raise RequestTooLarge(
                    f"the clips of this request last more than {settings.max_request_audio_seconds:g} s in all "
                    f"(over the limit at {upload.filename!r}, file {len(wavs) + 1} of {len(audio)}): send "
                    "fewer or shorter clips per request"
                )
            wavs.append(wav)
    vectors = await encode_items(
        services.speech_batcher,
        wavs,
        [speech_cost(w) for w in wavs],
        timeout=settings.request_timeout_s,
        request=request,
    )
    return _response(vectors, services, start)


@router.post("/text", response_model=EmbedResponse)
async def embed_text(
    request: Request, services: ServicesDep, settings: SettingsDep, body: EmbedTextRequest
) -> EmbedResponse:
    """Embed texts with the text encoder of the speech model's space (each cut to the encoder's max tokens;
    ``truncated`` lists the ones that were)."""
    start = time.perf_counter()
    if len(body.texts) > settings.max_texts:
        raise InvalidQuery(f"{len(body.texts)} texts in one request, over the limit of {settings.max_texts}")
    for i, text in enumerate(body.texts):
        check_text(text, settings.max_text_chars, f"texts[{i}]")
    fits = await fit_texts(services.models.text, body.texts)
    tokens = sum(f.tokens for f in fits)
    if tokens > settings.max_request_tokens:
        raise RequestTooLarge(
            f"these texts make {tokens} tokens, over the limit of {settings.max_request_tokens} per request: "
            "send fewer or shorter texts per request"
        )
    vectors = await encode_items(
        services.text_batcher,
        [f.text for f in fits],
        [text_cost(f.tokens) for f in fits],
        timeout=settings.request_timeout_s,
        request=request,
    )
    return _response(vectors, services, start, [i for i, f in enumerate(fits) if f.truncated])
