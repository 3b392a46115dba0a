"""Request and response models: the public contract of the HTTP API, kept apart from internal types."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EmbedResponse",
    "EmbedTextRequest",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "IndexInfo",
    "Readiness",
    "SpeechHit",
    "SpeechModelInfo",
    "SpeechSearchResponse",
    "TextHit",
    "TextQuery",
    "TextSearchResponse",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -------------------------------------------------------------------------------------------
class TextQuery(_Model):
    """A text query against one database. ``k`` is also checked against the server's ``max_k``."""

    text: str = Field(
        min_length=1, description="The query sentence.", examples=["the cat sleeps on the sofa"]
    )
    db: str = Field(min_length=1, description="Name of the database to search (see GET /indexes).")
    k: int = Field(10, ge=1, description="How many results to return (1 .. the server's max_k).")


class EmbedTextRequest(_Model):
    """Texts to embed (at most the server's ``max_texts``)."""

    texts: list[str] = Field(min_length=1, description="Sentences to embed, in order.")


# -- responses ------------------------------------------------------------------------------------------
class _Hit(_Model):
    id: int = Field(description="Global id of the item in the database (the index id).")
    ext_id: str | None = Field(None, description="The corpus' own id of the item, when it has one.")
    lang: str | None = None
    cosine: float = Field(description="Cosine similarity to the query, in [-1, 1].")
    rank: int = Field(description="1 for the best result.")
    margin: float | None = Field(
        None,
        description="Ratio margin cos / ((r_x + r_y) / 2) when the database holds neighbourhood means "
        "(margin_ry.npy); null otherwise.",
    )


class TextHit(_Hit):
    text: str


class SpeechHit(_Hit):
    path: str
    start: float | None = Field(None, description="Offset of the utterance in its file, seconds.")
    duration: float | None = Field(None, description="Length of the utterance, seconds.")


_TRUNCATED = (
    "True when the text query was longer than the text encoder reads (its max tokens, e.g. 512): only its "
    "beginning was embedded."
)


class TextSearchResponse(_Model):
    results: list[TextHit]
    took_ms: float
    truncated: bool = Field(default=False, description=_TRUNCATED)


class SpeechSearchResponse(_Model):
    results: list[SpeechHit]
    took_ms: float
    truncated: bool = Field(default=False, description=_TRUNCATED)


class EmbedResponse(_Model):
    vectors: list[list[float]] = Field(description="One L2-normalised vector per input, in input order.")
    dim: int
    space_id: str = Field(description="Embedding space of the vectors; only compare vectors of one space.")
    took_ms: float
    truncated: list[int] = Field(
        default_factory=list,
        description="Positions of the texts longer than the text encoder reads (its max tokens): only their "
        "beginning was embedded.",
    )


class IndexInfo(_Model):
    name: str
    kind: str = Field(description="'text' or 'speech'.")
    size: int = Field(description="Number of vectors.")
    dim: int
    space_id: str
    margins: bool = Field(description="Whether results carry a margin score.")


class Health(_Model):
    status: str


class SpeechModelInfo(_Model):
    kind: str = Field(description="'samu' (SAMU model), 'asr' (Whisper then text encoder) or 'fused'.")
    model_id: str = Field(
        description="The model; for asr and fused, the speech model string that reloads it."
    )
    space_id: str
    dim: int
    fusion_weight: float | None = Field(
        default=None, description="w of normalize(w*samu + (1-w)*asr), fused only."
    )
    fusion_gate: dict[str, float] | None = Field(
        default=None,
        description="fused only, when the model records one: clips whose Whisper confidence (mean token "
        "log-probability) is at least 'threshold' are fused with 'weight' instead.",
    )


class Readiness(_Model):
    status: str = Field(description="'ready', 'loading' or 'failed'.")
    detail: str | None = None
    speech_model: SpeechModelInfo | None = Field(
        default=None, description="The speech model loaded (once ready): which kind answers speech queries."
    )


class ErrorDetail(_Model):
    code: str = Field(description="Stable machine-readable error code, e.g. 'unknown_database'.")
    message: str = Field(description="What went wrong and how to fix it.")


class ErrorBody(_Model):
    error: ErrorDetail
