"""``POST /search/*``: speech or text query -> top-k sentences or utterances of one database."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from api.admission import encode_items, speech_cost, text_cost
from api.deps import MetricsDep, ServicesDep, SettingsDep, require_api_key
from api.routes.common import ERRORS, read_audio, speech_hit, text_hit
from api.schemas import SpeechSearchResponse, TextQuery, TextSearchResponse
from api.search import check_k, check_text, fit_texts, search_one

router = APIRouter(
    prefix="/search", tags=["search"], dependencies=[Depends(require_api_key)], responses=ERRORS
)

AudioFile = Annotated[UploadFile, File(description="Audio clip (WAV, FLAC, OGG, MP3 ...), one utterance.")]
K = Annotated[int, Form(description="How many results (1 .. the server's max_k).")]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


@router.post("/speech-to-text", response_model=TextSearchResponse)
async def speech_to_text(
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    audio: AudioFile,
    text_db: Annotated[str, Form(min_length=1, description="Text database to search.")],
    k: K = 10,
) -> TextSearchResponse:
    """Sentences of ``text_db`` nearest to the spoken query."""
    start = time.perf_counter()
    hits = await _speech_query(request, services, settings, metrics, audio, text_db, "text", k)
    return TextSearchResponse(results=[text_hit(h) for h in hits], took_ms=_ms(start))


@router.post("/speech-to-speech", response_model=SpeechSearchResponse)
async def speech_to_speech(
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    audio: AudioFile,
    speech_db: Annotated[str, Form(min_length=1, description="Speech database to search.")],
    k: K = 10,
) -> SpeechSearchResponse:
    """Utterances of ``speech_db`` nearest to the spoken query."""
    start = time.perf_counter()
    hits = await _speech_query(request, services, settings, metrics, audio, speech_db, "speech", k)
    return SpeechSearchResponse(results=[speech_hit(h) for h in hits], took_ms=_ms(start))


async def _speech_query(
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    audio: AudioFile,
    name: str,
    kind: str,
    k: int,
) -> list:
    """Decode an uploaded clip, embed it in the shared batch, search database ``name`` of ``kind``."""
    check_k(k, settings.max_k)
    db = services.database(name, kind)
    services.check_speech_query(db)
    with services.speech_batcher.announce():  # a forming batch waits for this clip while it decodes
        wav = await read_audio(audio, settings)
    (vector,) = await encode_items(
        services.speech_batcher,
        [wav],
        [speech_cost(wav)],
        timeout=settings.request_timeout_s,
        request=request,
    )
    return await search_one(db, vector, k, metrics)


async def _text_query(
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    query: TextQuery,
    kind: str,
) -> tuple[list, float, bool]:
    """Check and embed a text query (cut to the encoder's token limit), search ``query.db`` of ``kind``.

    The text encoder is the database's: the server's own in the speech model's space, else the one the
    database records as having built it.

    Returns:
        (hits, start time, whether the text was truncated).
    """
    start = time.perf_counter()
    check_k(query.k, settings.max_k)
    check_text(query.text, settings.max_text_chars)
    db = services.database(query.db, kind)
    encoder, batcher = services.text_side(db)
    (fit,) = await fit_texts(encoder, [query.text])
    (vector,) = await encode_items(
        batcher,
        [fit.text],
        [text_cost(fit.tokens)],
        timeout=settings.request_timeout_s,
        request=request,
    )
    return await search_one(db, vector, query.k, metrics), start, fit.truncated


@router.post("/text-to-text", response_model=TextSearchResponse)
async def text_to_text(
    request: Request, services: ServicesDep, settings: SettingsDep, metrics: MetricsDep, query: TextQuery
) -> TextSearchResponse:
    """Sentences of text database ``db`` nearest to the text query."""
    hits, start, cut = await _text_query(request, services, settings, metrics, query, "text")
    return TextSearchResponse(results=[text_hit(h) for h in hits], took_ms=_ms(start), truncated=cut)


@router.post("/text-to-speech", response_model=SpeechSearchResponse)
async def text_to_speech(
    request: Request, services: ServicesDep, settings: SettingsDep, metrics: MetricsDep, query: TextQuery
) -> SpeechSearchResponse:
    """Utterances of speech database ``db`` nearest to the text query."""
    hits, start, cut = await _text_query(request, services, settings, metrics, query, "speech")
    return SpeechSearchResponse(results=[speech_hit(h) for h in hits], took_ms=_ms(start), truncated=cut)
