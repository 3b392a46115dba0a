"""The state of a database folder being built: open it new, resume it, or reopen a finished one to append.

:func:`open_build_folder` decides which from ``manifest.json`` (none: a new build in an empty folder; incomplete:
a resume with the very same settings; complete and ``append``: new shards after the old ones), and removes
the temp files a killed ``os.replace``-based write leaves. :func:`load_trained` gives the empty trained index
that every shard clones; :func:`write_index_atomic` is how every index file of the folder is written.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import faiss

from index.factory import make_index, parse_factory
from index.manifest import MANIFEST_FILE, TRAINED_FILE, IndexFormatError, Manifest
from index.store import STORE_FILE
from index.tuning_truth import QUERIES_FILE, is_tuning_file

logger = logging.getLogger(__name__)

TEMP_FILE = re.compile(
    r"^\..*\.tmp$"
)  # what write_index_atomic and the manifest/store writers leave if killed


def open_build_folder(folder: Path, wanted: Manifest, append: bool = False) -> Manifest:
    """The manifest to build on: ``wanted`` saved into a new folder, or the folder's own when resuming.

    Args:
        folder: the database folder (created if missing).
        wanted: the manifest this run would write (name, kind, dim, space, encoder, factory, build settings).
        append: reopen a complete database to add shards after its own (``extra["append_base"]`` records the
            items it had).

    Raises:
        FileExistsError: a folder with other files but no manifest.
        IndexFormatError: a folder whose manifest holds other settings than ``wanted``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for p in folder.iterdir():
        if TEMP_FILE.match(p.name):  # leftovers of a killed os.replace-based write
            p.unlink()
    if not (folder / MANIFEST_FILE).exists():
        ours = {STORE_FILE, TRAINED_FILE, STORE_FILE + "-journal", QUERIES_FILE}
        strays = [p.name for p in folder.iterdir() if p.name not in ours and not is_tuning_file(p.name)]
        if strays:
            raise FileExistsError(
                f"{folder} is not empty ({sorted(strays)[:5]}) and has no {MANIFEST_FILE}: choose an "
                "empty folder for a new database"
            )
        wanted.save(folder)
        return wanted
    have = Manifest.load(folder)
    diffs = [
        f"{key}: folder has {getattr(have, key)!r}, asked {getattr(wanted, key)!r}"
        for key in ("kind", "dim", "space_id", "encoder_id", "factory")
        if getattr(have, key) != getattr(wanted, key)
    ]
    diffs += [
        f"build.{key}: folder has {have.build.get(key)!r}, asked {value!r}"
        for key, value in wanted.build.items()
        if have.build.get(key) != value
    ]
    if diffs:
        raise IndexFormatError(
            f"{folder / MANIFEST_FILE} holds a build with other settings ({'; '.join(diffs)}); resume "
            "it with the same settings or use another folder"
        )
    if have.complete and append:
        # Appending reopens a finished database: new shards follow, with the same trained quantizer.
        have.complete = False
        have.extra["append_base"] = have.inputs
        have.save(folder)
        logger.info("%s: appending after %d shards (%d items)", folder, len(have.shards), have.inputs)
    elif not have.complete:
        logger.info("%s: resuming after %d shards (%d items)", folder, len(have.shards), have.inputs)
    return have


def load_trained(folder: Path, manifest: Manifest, factory: str, dim: int) -> faiss.Index | None:
    """The empty index shards are cloned from: a fresh one for Flat, ``trained.faiss`` for IVF / PQ.

    Returns None when an IVF / PQ build has not trained yet (no ``trained.faiss`` and no shard).

    Raises:
        IndexFormatError: ``trained.faiss`` missing while shards exist, or unreadable.
    """
    if parse_factory(factory)["nlist"] is None:
        return make_index(factory, dim)
    path = folder / TRAINED_FILE
    if not path.exists():
        if manifest.shards:
            raise IndexFormatError(f"{path} is missing but shards exist; the folder is damaged: rebuild it")
        return None
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexFormatError(
            f"{path}: cannot read the trained index ({exc}); rebuild the database"
        ) from exc


def write_index_atomic(index: faiss.Index, path: Path) -> None:
    """faiss.write_index through a temp file in the same folder, fsync and os.replace."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
