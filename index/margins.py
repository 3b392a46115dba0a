"""Precomputed neighbourhood means r_y of a database, so that a search service can score margins online.

For a query x and a database item y (LASER's ratio margin)::

    margin(x, y) = cos(x, y) / ((r_x + r_y) / 2)

``r_x``, the mean cosine of x to its k nearest database items, comes with the search itself. ``r_y``, the mean
cosine of y to its k nearest *queries*, needs a sample of query-side embeddings (e.g. speech embeddings of
the kind users will send): :func:`compute_reference_margins` computes it once per database and stores it as
``margin_ry.npy`` (float32, one value per global id) with ``margin_ry.json`` (k, reference size, space).
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from index.manifest import IndexFormatError, Manifest, atomic_write_bytes, check_space

__all__ = [
    "MARGIN_FILE",
    "MARGIN_META_FILE",
    "ReferenceMargins",
    "compute_reference_margins",
    "load_reference_margins",
    "ratio_margins",
]

logger = logging.getLogger(__name__)

MARGIN_FILE = "margin_ry.npy"
MARGIN_META_FILE = "margin_ry.json"


@dataclass(frozen=True)
class ReferenceMargins:
    """r_y of every database item: ``ry`` float32 (ntotal,), computed over the ``k`` nearest references."""

    ry: np.ndarray
    k: int
    reference_count: int


def _normalised(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} have shape {x.shape}; expected (n, {dim})")
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} hold NaN or inf values; fix the encoder output")
    faiss.normalize_L2(x)
    return x


def compute_reference_margins(
    db_folder: str | os.PathLike[str],
    reference_embeddings: np.ndarray,
    k: int = 4,
    *,
    reference_space_id: str | None = None,
    db_vectors: np.ndarray | None = None,
    batch_size: int = 65_536,
) -> ReferenceMargins:
    """Compute r_y for every item of a database and write ``margin_ry.npy`` + ``margin_ry.json`` into it.

    Args:
        db_folder: a finished database folder (``manifest.json`` and shards).
        reference_embeddings: (m, dim) float embeddings of query-like items (normalised here), m >= k.
        k: neighbourhood size; the service uses the same k for r_x.
        reference_space_id: space id of the references, checked against the database's when given.
        db_vectors: (ntotal, dim) the database's own vectors in id order; default: read back from the shards
            with :meth:`index.sharded.ShardedIndex.reconstruct_batch` (exact for Flat and IVF-Flat, the
            decoded codes for SQ / PQ indexes).
        batch_size: database vectors per search call.

    Returns:
        The margins written.

    Raises:
        ValueError: wrong shapes, k < 1 or more than the references, or space mismatch.
        IndexFormatError: the folder is not a complete database.
    """
    folder = Path(db_folder)
    manifest = Manifest.load(folder)
    if not manifest.complete:
        raise IndexFormatError(f"{folder}: the build did not finish; finish it before computing margins")
    if reference_space_id is not None:
        check_space(manifest.space_id, reference_space_id, what=f"database {folder}")
    ref = _normalised(reference_embeddings, manifest.dim, "reference embeddings")
    if not 1 <= k <= len(ref):
        raise ValueError(f"k={k}: need 1 <= k <= number of reference embeddings ({len(ref)})")
    ref_index = faiss.IndexFlatIP(manifest.dim)
    ref_index.add(ref)
    ry = np.empty(manifest.ntotal, dtype=np.float32)
    if db_vectors is not None:
        db = _normalised(db_vectors, manifest.dim, "db_vectors")
        if len(db) != manifest.ntotal:
            raise ValueError(f"db_vectors has {len(db)} rows but {folder} holds {manifest.ntotal} vectors")
    else:
        from index.sharded import ShardedIndex  # margins <- sharded only here: keep the import light

        sharded = ShardedIndex.load(folder)
    for start in range(0, manifest.ntotal, batch_size):
        stop = min(start + batch_size, manifest.ntotal)
        if db_vectors is not None:
            chunk = db[start:stop]
        else:
            chunk = _normalised(
                sharded.reconstruct_batch(np.arange(start, stop)), manifest.dim, "stored vectors"
            )
        sims, _ = ref_index.search(chunk, k)
        ry[start:stop] = sims.mean(axis=1)
    buf = io.BytesIO()
    np.save(buf, ry, allow_pickle=False)
    atomic_write_bytes(folder / MARGIN_FILE, buf.getvalue())
    meta = {"k": k, "reference_count": len(ref), "ntotal": manifest.ntotal, "space_id": manifest.space_id}
    atomic_write_bytes(folder / MARGIN_META_FILE, (json.dumps(meta, indent=2) + "\n").encode())
    logger.info("%s: r_y of %d items over %d references (k=%d)", folder.name, len(ry), len(ref), k)
    return ReferenceMargins(ry=ry, k=k, reference_count=len(ref))


def load_reference_margins(db_folder: str | os.PathLike[str], ntotal: int) -> ReferenceMargins | None:
    """Read ``margin_ry.npy`` of a database, or None when it has none.

    Args:
        db_folder: the database folder.
        ntotal: the number of vectors the index holds (the file must have one value per vector).

    Raises:
        IndexFormatError: the files exist but are unreadable or do not fit the index.
    """
    folder = Path(db_folder)
    path, meta_path = folder / MARGIN_FILE, folder / MARGIN_META_FILE
    if not path.exists():
        return None
    try:
        ry = np.load(path, allow_pickle=False)
        meta = json.loads(meta_path.read_text())
        k = int(meta["k"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexFormatError(
            f"{path}: unreadable margin file or sidecar ({exc}); recompute it with compute_reference_margins"
        ) from exc
    if ry.dtype != np.float32 or ry.shape != (ntotal,):
        raise IndexFormatError(
            f"{path}: holds {ry.dtype} {ry.shape}, expected float32 ({ntotal},); the index changed since: "
            "recompute it with compute_reference_margins"
        )
    return ReferenceMargins(ry=ry, k=k, reference_count=int(meta.get("reference_count", 0)))


def ratio_margins(cos: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """LASER's ratio margin cos / ((r_x + r_y) / 2).

    Args:
        cos: float (n, k) cosines of each query to its hits.
        rx: float (n,) mean cosine of each query to its k nearest database items.
        ry: float (n, k) r_y of each hit.

    Returns:
        float32 (n, k).
    """
    mean = (np.asarray(rx, dtype=np.float64)[:, None] + np.asarray(ry, dtype=np.float64)) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.asarray(cos, dtype=np.float64) / mean).astype(np.float32)
