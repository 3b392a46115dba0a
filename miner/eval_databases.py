"""The search side of `miner eval retrieval`: a corpus file, a built database, or the speech of a manifest.

Each opener returns ``(search, id_to_text)``: ``search(q float32 (n, d), k) -> (sims (n, k), ids (n, k))`` and
the text of a found id (its transcript, for speech). Corpus files and speech manifests are embedded once and
cached under ``<data root>/cache`` by file content and embedding space, then searched exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SearchFn = Callable[[Any, int], tuple[Any, Any]]
Database = tuple[SearchFn, Callable[[int], str]]


def exact_search(db: np.ndarray) -> SearchFn:
    """Exact inner-product search (faiss Flat) over float32 (m, d) L2-normalised rows."""
    import faiss

    rows = np.ascontiguousarray(db, dtype=np.float32)
    index = faiss.IndexFlatIP(rows.shape[1])
    index.add(rows)

    def search(q: Any, k: int) -> tuple[Any, Any]:
        return index.search(np.ascontiguousarray(q, dtype=np.float32), min(k, len(rows)))

    return search


def open_database(db: str, text_encoder: Any) -> Database:
    """A corpus file when ``db`` is a file, else the database of that name under the data root."""
    path = Path(db).expanduser()
    if path.is_file():
        return corpus_database(path, text_encoder)
    return named_database(db, text_encoder.space_id)


def corpus_database(path: Path, text_encoder: Any, root: Path | None = None) -> Database:
    """A corpus file (txt: one sentence per line, or tsv / jsonl / parquet) embedded once and searched exactly.

    Embeddings are cached in ``<data root>/cache/corpus/<sha of the file>-<space id>.npy``. For a centred
    teacher (``CenteredTextEncoder``) the base teacher's vectors are cached and the centre applied after
    loading: every model distilled from e5 has its own centre, and re-embedding a 29k-sentence corpus per
    model costs ~15 minutes on 2 CPU cores.
    """
    from miner.corpus import read_corpus
    from miner.encoders.text import CenteredTextEncoder
    from miner.home import data_root

    texts = [s.text for s in read_corpus(path)]
    if not texts:
        raise ValueError(f"corpus {path} holds no sentences")
    cached_encoder = text_encoder.base if isinstance(text_encoder, CenteredTextEncoder) else text_encoder
    cache = data_root(root) / "cache" / "corpus" / f"{_file_sha(path)[:16]}-{cached_encoder.space_id}.npy"

    def embed() -> np.ndarray:
        log.info("embedding %d sentences of %s (space %s)", len(texts), path, cached_encoder.space_id)
        return np.asarray(cached_encoder.encode(texts, progress=True))

    emb = _cached(cache, (len(texts), text_encoder.dim), embed)
    if cached_encoder is not text_encoder:
        emb = text_encoder.from_base(emb)
    return exact_search(emb), lambda i: texts[i]


def named_database(name: str, space_id: str, root: Path | None = None) -> Database:
    """A text database built under the data root, opened as the API and ``miner search`` open it."""
    from miner.databases import open_database as open_built
    from miner.databases import plan_databases
    from miner.home import data_root

    try:
        (plan,) = plan_databases(data_root(root), [name], space_id)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc}; or pass a corpus file (one sentence per line, or tsv / jsonl / parquet)"
        ) from exc
    db = open_built(plan.folder, plan.name)
    if db.kind != "text":
        raise ValueError(f"database {name!r} is a {db.kind} database; retrieval needs a text database here")
    store = db.store

    def id_to_text(i: int) -> str:
        return str(store.get(i)["text"])

    return db.index.search, id_to_text


def is_speech_manifest(db: str) -> bool:
    """True when ``db`` is a manifest file (TSV header or JSONL keys) with an ``audio`` column."""
    path = Path(db).expanduser()
    if not path.is_file() or path.suffix.lower() not in (".tsv", ".jsonl"):
        return False
    with path.open(encoding="utf-8") as f:
        first = f.readline()
    if path.suffix.lower() == ".tsv":
        return "audio" in first.rstrip("\n").split("\t")
    try:
        return "audio" in json.loads(first)
    except json.JSONDecodeError:
        return False


def speech_manifest_database(path: Path, speech: Any, batch_size: int, root: Path | None = None) -> Database:
    """The speech of a manifest as the search side (speech-to-speech retrieval); an item's text is its transcript.

    Embeddings are cached in ``<data root>/cache/speech/<sha of the manifest>-<model>-<space id>.npy``.
    """
    from miner.home import data_root
    from miner.train.data import load_utterance_audio, read_manifest

    utts = read_manifest(path, require_lang=False)
    name = f"{_file_sha(path)[:16]}-{speech.fingerprint}-{speech.space_id}.npy"

    def embed() -> np.ndarray:
        waves = [load_utterance_audio(u) for u in utts]
        return np.asarray(speech.encode(waves, batch_size=batch_size, progress=True))

    emb = _cached(data_root(root) / "cache" / "speech" / name, (len(utts), speech.dim), embed)
    texts = [u.text for u in utts]
    return exact_search(emb), lambda i: texts[i]


def _cached(cache: Path, shape: tuple[int, int], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array in ``cache`` when it has ``shape``, else ``compute()`` saved there atomically."""
    emb = np.load(cache) if cache.is_file() else None
    if emb is not None and emb.shape == shape:
        log.info("embeddings from cache %s", cache)
        return emb
    emb = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, cache)
    return emb


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
