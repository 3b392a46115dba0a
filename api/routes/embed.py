"""``POST /embed/*``: vectors of the shared space, for clients that search or mine themselves."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, UploadFile

from api.deps import ServicesDep, SettingsDep, require_api_key
from api.routes.common import ERRORS, read_audio
from api.schemas import EmbedResponse, EmbedTextRequest
from api.search import InvalidQuery

router = APIRouter(prefix="/embed", tags=["embed"], dependencies=[Depends(require_api_key)], responses=ERRORS)


def _response(vectors: list[np.ndarray], services: ServicesDep, start: float) -> EmbedResponse:
    models = services.models
    return EmbedResponse(
        vectors=[v.astype(float).tolist() for v in vectors],
        dim=models.dim,
        space_id=models.space_id,
        took_ms=round((time.perf_counter() - start) * 1000.0, 3),
    )


@router.post("/speech", response_model=EmbedResponse)
async def embed_speech(
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
    with services.speech_batcher.announce():
        wavs = [await read_audio(upload, settings) for upload in audio]
    vectors = await asyncio.gather(*(services.speech_batcher.submit(w) for w in wavs))
    return _response(list(vectors), services, start)


@router.post("/text", response_model=EmbedResponse)
async def embed_text(services: ServicesDep, settings: SettingsDep, body: EmbedTextRequest) -> EmbedResponse:
    """Embed texts with the text encoder of the speech model's space."""
    start = time.perf_counter()
    if len(body.texts) > settings.max_texts:
        raise InvalidQuery(f"{len(body.texts)} texts in one request, over the limit of {settings.max_texts}")
    for i, text in enumerate(body.texts):
        if not text or len(text) > settings.max_text_chars:
            raise InvalidQuery(
                f"texts[{i}] has {len(text)} characters; allowed 1 to {settings.max_text_chars}"
            )
    vectors = await asyncio.gather(*(services.text_batcher.submit(t) for t in body.texts))
    return _response(list(vectors), services, start)
