"""Training and evaluation data: manifests, cached teacher targets, length-bucketed batches.

A manifest is a TSV file with a header row, or JSONL (``.jsonl`` / ``.json``), one utterance per row:

    audio      path of the audio file, relative to the manifest's folder (or absolute); ``path`` also accepted
    text       transcript (the teacher embeds it)
    lang       language code
    id         optional; default ``<audio>`` or ``<audio>@<start>``
    start      optional, seconds into the file
    duration   optional, seconds (read from the file header when missing)
    translation  optional (retrieval evaluation)

TSV cells are taken verbatim (no quoting), so texts may hold quotes but no tabs or newlines.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index.manifest import atomic_write_bytes
from miner.audio import AudioError, load_audio, probe
from miner.types import seconds_to_samples

log = logging.getLogger(__name__)

__all__ = [
    "ManifestError",
    "Utterance",
    "UtteranceBatches",
    "bucket_batches",
    "load_utterance_audio",
    "read_manifest",
    "teacher_embeddings",
    "texts_sha",
]

_AUDIO_KEYS = ("audio", "path")


class ManifestError(ValueError):
    """A manifest row that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Utterance:
    """One manifest row; ``row`` is its 1-based line number in the manifest (for error messages)."""

    id: str
    audio: Path
    text: str
    lang: str
    duration: float
    start: float = 0.0
    translation: str | None = None
    row: int = 0
    manifest: str = ""

    @property
    def where(self) -> str:
        return f"{self.manifest} line {self.row}"


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row dict) for every non-empty row of a TSV-with-header or JSONL file."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path} line {n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise ManifestError(f"{path} line {n}: expected a JSON object, got {type(obj).__name__}")
            out.append((n, obj))
        return out
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if not header:
        raise ManifestError(f"{path} is empty: a TSV manifest needs a header row (audio, text, lang, ...)")
    header = [h.strip() for h in header]
    for n, cells in enumerate(reader, start=2):
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise ManifestError(
                f"{path} line {n}: {len(cells)} tab-separated cells, but the header has "
                f"{len(header)} ({', '.join(header)})"
            )
        out.append((n, dict(zip(header, cells, strict=True))))
    return out


def _opt_float(row: dict[str, Any], key: str, where: str) -> float | None:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: {key} must be a number of seconds, got {value!r}") from None
    if not np.isfinite(out) or out < 0:
        raise ManifestError(f"{where}: {key} must be >= 0 seconds, got {value!r}")
    return out


def read_manifest(
    path: str | os.PathLike[str],
    *,
    require_text: bool = True,
    require_lang: bool = True,
    check_audio: bool = True,
) -> list[Utterance]:
    """Read a manifest (see the module docstring) and check its audio files.

    Args:
        path: TSV (header row) or JSONL manifest.
        require_text, require_lang: refuse rows without a transcript / language.
        check_audio: check that every audio file exists (and read headers where ``duration`` is missing).

    Returns:
        Utterances in file order.

    Raises:
        FileNotFoundError: the manifest does not exist.
        ManifestError: missing column, bad number, missing or unreadable audio file (file and line named).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"manifest {file} does not exist")
    base = file.resolve().parent
    out: list[Utterance] = []
    for n, row in _rows(file):
        where = f"{file} line {n}"
        audio_key = next((k for k in _AUDIO_KEYS if row.get(k)), None)
        if audio_key is None:
            raise ManifestError(f"{where}: no audio path (column 'audio'); columns present: {', '.join(row)}")
        rel = str(row[audio_key]).strip()
        audio = Path(rel).expanduser()
        audio = audio if audio.is_absolute() else base / audio
        text = str(row.get("text") or "").strip()
        lang = str(row.get("lang") or "").strip()
        if require_text and not text:
            raise ManifestError(f"{where}: empty or missing 'text' (the transcript the teacher embeds)")
        if require_lang and not lang:
            raise ManifestError(f"{where}: empty or missing 'lang' (needed for language re-balancing)")
        start = _opt_float(row, "start", where) or 0.0
        duration = _opt_float(row, "duration", where)
        if check_audio:
            if not audio.is_file():
                raise ManifestError(
                    f"{where}: audio file {audio} does not exist (path {rel!r} is taken "
                    f"relative to the manifest's folder {base})"
                )
            if duration is None:
                try:
                    total = probe(audio).duration
                except AudioError as exc:
                    raise ManifestError(f"{where}: unreadable audio file {audio}: {exc}") from exc
                duration = total - start
        if duration is None or duration <= 0:
            raise ManifestError(f"{where}: duration must be > 0 seconds (got {duration}, start {start})")
        uid = str(row.get("id") or "").strip() or (rel if not start else f"{rel}@{start:.3f}")
        translation = row.get("translation")
        out.append(
            Utterance(
                id=uid,
                audio=audio,
                text=text,
                lang=lang,
                duration=float(duration),
                start=float(start),
                translation=str(translation).strip() if translation not in (None, "") else None,
                row=n,
                manifest=str(file),
            )
        )
    if not out:
        raise ManifestError(f"manifest {file} holds no utterances")
    return out


def load_utterance_audio(utt: Utterance) -> np.ndarray:
    """The utterance's samples: float32 mono 16 kHz, cut to ``start`` / ``duration``.

    Raises:
        ManifestError: the file is missing or unreadable, or the span lies outside it (file and line named).
    """
    try:
        wav = load_audio(utt.audio)
    except AudioError as exc:
        raise ManifestError(f"{utt.where}: cannot read audio {utt.audio}: {exc}") from exc
    a = seconds_to_samples(utt.start)
    b = a + seconds_to_samples(utt.duration)
    clip = wav[a:b]
    if len(clip) == 0:
        raise ManifestError(
            f"{utt.where}: span start={utt.start}s duration={utt.duration}s lies outside "
            f"{utt.audio} ({len(wav) / 16000:.2f} s)"
        )
    return clip


def texts_sha(texts: Sequence[str]) -> str:
    """sha256 of a list of texts (order and boundaries included)."""
    h = hashlib.sha256()
    for t in texts:
        data = t.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def teacher_embeddings(
    encoder: Any,
    texts: Sequence[str],
    cache_dir: str | os.PathLike[str] | None,
    batch_size: int = 64,
) -> np.ndarray:
    """Teacher embeddings of ``texts``, computed once per distinct text and cached on disk.

    The cache holds ``teacher-<space id>-<sha of the texts>.npy`` (float32 (n, dim), rows in list order) and,
    beside it, ``.texts.jsonl`` (its texts, one JSON string per line). A new list reuses the rows of every
    listed file of the same space and embeds only texts none of them holds: a training set that grows does not
    re-embed what it had. A file written before the lists existed is listed the first time it is hit.

    Args:
        encoder: a text encoder (``encode``, ``space_id``, ``dim``).
        texts: n texts (duplicates are embedded once).
        cache_dir: folder of the cache files (``None``: no cache).

    Returns:
        float32 (n, dim), L2-normalised rows, in input order.
    """
    texts = list(texts)
    if cache_dir is None:
        return _embed_distinct(encoder, texts, batch_size)
    cache = Path(cache_dir) / f"teacher-{encoder.space_id}-{texts_sha(texts)[:16]}.npy"
    if cache.is_file():
        emb = np.load(cache)
        if emb.shape == (len(texts), encoder.dim):
            log.info("teacher embeddings of %d texts from cache %s", len(texts), cache)
            if not _texts_file(cache).is_file():
                _write_text_list(cache, texts)
            return emb
        log.warning(
            "ignoring teacher cache %s of shape %s (expected %s)", cache, emb.shape, (len(texts), encoder.dim)
        )
    known: dict[str, tuple[Path, int]] = {}
    for listed in sorted(Path(cache_dir).glob(f"teacher-{encoder.space_id}-*.texts.jsonl")):
        for row, line in enumerate(listed.read_text(encoding="utf-8").splitlines()):
            known.setdefault(json.loads(line), (listed, row))
    missing = sorted({t for t in texts if t not in known})
    if len(missing) < len(set(texts)):
        log.info(
            "teacher embeddings: %d distinct texts cached, %d to embed",
            len(set(texts)) - len(missing),
            len(missing),
        )
    new = _embed_distinct(encoder, missing, batch_size) if missing else np.zeros((0, encoder.dim), np.float32)
    emb = np.empty((len(texts), encoder.dim), dtype=np.float32)
    fresh = {t: i for i, t in enumerate(missing)}
    by_file: dict[Path, list[tuple[int, int]]] = {}
    for i, t in enumerate(texts):
        if t in fresh:
            emb[i] = new[fresh[t]]
        else:
            listed, row = known[t]
            by_file.setdefault(listed, []).append((i, row))
    for listed, pairs in by_file.items():
        stored = np.load(listed.with_name(listed.name.removesuffix(".texts.jsonl") + ".npy"), mmap_mode="r")
        at = np.asarray(pairs, dtype=np.int64)  # (k, 2): (row here, row there)
        emb[at[:, 0]] = stored[at[:, 1]]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, cache)
    _write_text_list(cache, texts)
    return emb


def _embed_distinct(encoder: Any, texts: list[str], batch_size: int) -> np.ndarray:
    """float32 (n, dim): each distinct text embedded once."""
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    log.info("embedding %d distinct texts with teacher %s", len(unique), encoder.space_id)
    emb = np.asarray(encoder.encode(list(unique), batch_size=batch_size, progress=True), dtype=np.float32)
    return emb[inverse.reshape(-1)]


def _texts_file(cache: Path) -> Path:
    return cache.with_name(cache.name.removesuffix(".npy") + ".texts.jsonl")


def _write_text_list(cache: Path, texts: Sequence[str]) -> None:
    """The texts of ``cache``'s rows, one JSON string per line, beside it."""
    atomic_write_bytes(_texts_file(cache), "".join(json.dumps(t) + "\n" for t in texts).encode("utf-8"))


def bucket_batches(
    indices: np.ndarray,
    durations: Sequence[float] | np.ndarray,
    batch_seconds: float,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """Group rows of similar length into batches of at most ``batch_seconds`` padded audio.

    Rows are sorted by duration (stable, so the incoming shuffled order breaks ties) and cut greedily so
    that ``len(batch) * longest <= batch_seconds``; a clip longer than ``batch_seconds`` gets a batch of its
    own. The batch order is then shuffled with ``rng`` (kept sorted longest first without one).

    Args:
        indices: int rows to batch (may repeat, e.g. up-sampled utterances).
        durations: seconds of every row of the dataset (indexed by ``indices``).
        batch_seconds: padded-audio budget per batch.
        rng: shuffles the batch order.

    Returns:
        int64 index arrays.
    """
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds must be > 0, got {batch_seconds}")
    indices = np.asarray(indices, dtype=np.int64)
    all_dur = np.asarray(durations, dtype=np.float64)
    order = indices[np.argsort(-all_dur[indices], kind="stable")]
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = float(all_dur[order[start]])
        size = max(1, int(batch_seconds // longest)) if longest > 0 else len(order)
        batches.append(order[start : start + size])
        start += size
    if rng is not None:
        perm = rng.permutation(len(batches))
        batches = [batches[i] for i in perm]
    return batches


class UtteranceBatches(torch.utils.data.Dataset):
    """Map-style dataset over a fixed list of batches: item i loads batch i's audio and model inputs.

    Used with ``DataLoader(batch_size=None)`` so that worker processes decode audio ahead of the model.

    Args:
        utterances: the manifest rows.
        rows: per-row arrays sliced into every batch under their key: ``targets`` float32 (n, dim) teacher
            embeddings, ``text_ids`` int64 (n,) distinct-text ids (the InfoNCE false-negative mask), ...
        batches: index arrays into ``utterances``.
        prepare: ``backbone.prepare``: list of waveforms -> dict of CPU tensors.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        rows: Mapping[str, np.ndarray],
        batches: Sequence[np.ndarray],
        prepare: Callable[[list[np.ndarray]], dict[str, torch.Tensor]],
    ):
        self.utterances = utterances
        self.rows = dict(rows)
        self.batches = list(batches)
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        idx = self.batches[i]
        waves = [load_utterance_audio(self.utterances[j]) for j in idx]
        return {
            "inputs": self.prepare(waves),
            **{k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in self.rows.items()},
            "seconds": float(sum(len(w) for w in waves) / 16000),
            "n": len(idx),
        }
