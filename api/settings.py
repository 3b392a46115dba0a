"""The one typed configuration of the search service, read from ``MINER_*`` environment variables.

Every field can be set as ``MINER_<FIELD>`` (e.g. ``MINER_HOME=/data``, ``MINER_SPEECH_MODEL=./samu``,
``MINER_API_KEYS=key1,key2``). List fields take a comma-separated string or a JSON list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings"]

MB = 1_000_000


def _split_list(value: Any) -> Any:
    """``"a, b"`` or ``'["a","b"]'`` -> ``["a", "b"]``; ``""`` -> ``[]``; lists pass through."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Search service configuration (env prefix ``MINER_``).

    Attributes:
        home: data root holding one folder per database (``<home>/<name>/manifest.json``).
        speech_model: a speech model string (``miner.encoders.speech_spec``): a SAMU model folder or hub id,
            ``asr[:FOLDER]`` (Whisper transcript -> the folder's paired text encoder), or
            ``fused[,w=W][:FOLDER]``; ``None`` = ``miner.encoders.samu.load_speech_encoder``'s default (the
            offline demo model). ``GET /readyz`` reports the kind loaded.
        text_model: text encoder name or folder; ``None`` = the speech model's paired teacher
            (``load_text_encoder_for``), which is the only safe choice unless you know the spaces match.
        databases: names to serve; empty = every database under ``home`` in the model's space (the others
            are skipped with a warning). A named database in another space stops the start-up.
        device: torch device for the encoders (``None``: CUDA when available).
        max_upload_bytes: largest request body accepted, checked while it streams in.
        max_audio_seconds: longest audio clip accepted.
        max_decoded_samples: most samples (frames x channels at the stored rate) one clip may decode to,
            checked from the header before decoding; ``None``: ``max_audio_seconds`` of 96 kHz stereo.
        max_k: largest number of results a query may ask for.
        max_texts: most texts one ``/embed/text`` call may embed.
        max_text_chars: longest text accepted in a query.
        max_request_audio_seconds: most seconds of audio one ``/embed/speech`` request may hold in all.
        max_request_tokens: most text tokens one ``/embed/text`` request may make in all (each text counted
            after it is cut to the encoder's max tokens).
        batch_size: most items one encoder forward pass takes.
        batch_seconds: most seconds of audio one speech forward pass takes (``None``: ``batch_size`` alone). On a
            GPU, a large ``batch_size`` with a seconds budget keeps each pass near the same work (see
            docs/benchmarks.md, "GPU").
        search_device: where searches run: ``auto`` (Flat databases on CUDA through torch when faiss has no
            GPU, see ``index.sharded.ShardedIndex.load``), ``cpu``, ``cuda`` or ``cuda:N``.
        batch_wait_ms: how long the batcher waits for more items once it holds one.
        queue_size: items waiting per encoder beyond which requests get 503 + Retry-After.
        max_queue_wait_s: a request whose expected wait for an encoder (the audio seconds or tokens queued
            ahead of it over the encoder's measured rate) is longer gets 503 + Retry-After at once.
        request_timeout_s: a request still waiting for an encoder after this long gets 503 + Retry-After and
            its items are dropped (``None``: no deadline).
        header_timeout_s: a connection that has not sent a request's complete headers within this many
            seconds is closed (slowloris); ``miner serve`` only.
        body_timeout_s: a connection whose request body is still incomplete this many seconds after its head is
            closed (slow uploads); ``miner serve`` only.
        max_connections: connections (and requests in progress) beyond which uvicorn answers 503 at once.
        keep_alive_s: idle keep-alive connections are closed after this many seconds.
        api_keys: accepted keys (``X-API-Key`` or ``Authorization: Bearer``); empty = no authentication.
        cors_origins: origins allowed by CORS; empty = no CORS headers.
        metrics_database_names: label ``/metrics`` search times with database names (``False``: one label,
            ``*``, so that ``/metrics`` does not list the databases).
        metrics_require_key: ``/metrics`` asks for an API key like the search routes (when keys are set).
        index_load: ``ram`` reads shards into memory (IVF shards merged: search costs what one plain faiss index
            costs), ``mmap`` maps them (processes share the page cache; indexes larger than RAM), ``auto``
            (default) reads into RAM when the shards take at most half the available memory.
        load_in_background: serve ``/healthz`` at once and load models behind ``/readyz`` (503 until loaded);
            ``False`` loads everything before the server accepts connections.
    """

    model_config = SettingsConfigDict(env_prefix="MINER_", extra="ignore", validate_default=True)

    home: Path = Path("data")
    speech_model: str | None = None
    text_model: str | None = None
    databases: Annotated[list[str], NoDecode] = Field(default_factory=list)
    device: str | None = None
    max_upload_bytes: int = Field(default=20 * MB, gt=0)
    max_audio_seconds: float = Field(default=60.0, gt=0)
    max_decoded_samples: int | None = Field(default=None, gt=0)
    max_k: int = Field(default=100, ge=1)
    max_texts: int = Field(default=128, ge=1)
    max_text_chars: int = Field(default=5000, ge=1)
    max_request_audio_seconds: float = Field(default=120.0, gt=0)
    max_request_tokens: int = Field(default=16384, ge=1)
    batch_size: int = Field(default=16, ge=1)
    batch_seconds: float | None = Field(default=None, gt=0)
    search_device: str = "auto"
    batch_wait_ms: float = Field(default=5.0, ge=0)
    queue_size: int = Field(default=256, ge=1)
    max_queue_wait_s: float | None = Field(default=10.0, gt=0)
    request_timeout_s: float | None = Field(default=30.0, gt=0)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=60.0, gt=0)
    max_connections: int = Field(default=512, ge=1)
    keep_alive_s: int = Field(default=5, ge=1)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    metrics_database_names: bool = True
    metrics_require_key: bool = False
    load_in_background: bool = True
    index_load: Literal["auto", "ram", "mmap"] = "auto"

    @field_validator("databases", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("databases")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        from miner.home import check_name

        return [check_name(name) for name in value]
