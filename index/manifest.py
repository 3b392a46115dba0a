"""The manifest of a database folder: dim, space id, factory, shard list with counts and checksums.

A database lives in ``<data_root>/<name>/``::

    manifest.json        this file (the commit point of a build: a shard exists once it is listed here)
    trained.faiss        the trained empty index every shard was cloned from (IVF / PQ factories only)
    shard_00000.faiss    faiss index files, inner product over L2-normalised float32 vectors
    store.sqlite         id -> sentence / utterance metadata (see :mod:`index.store`)

The manifest is JSON written to a temp file then ``os.replace``-d, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TRAINED_FILE = "trained.faiss"
KINDS = ("text", "speech")


class IndexFormatError(ValueError):
    """A database file (manifest, shard, store) is missing, corrupt or of an incompatible format."""


class SpaceMismatchError(ValueError):
    """A query or model from one embedding space met an index of another.

    Mirrors ``miner.spaces.SpaceMismatchError`` without importing ``miner`` (``index`` needs numpy and faiss
    only); both subclass ValueError.
    """


def check_space(index_space: str, query_space: str, what: str = "index") -> None:
    """Raise :class:`SpaceMismatchError` naming both spaces when they differ.

    Args:
        index_space: the space id the index was built in.
        query_space: the space id of the queries (or of the encoder that makes them).
        what: how to name the index in the message (e.g. ``"index ./data/en-text"``).
    """
    if index_space != query_space:
        raise SpaceMismatchError(
            f"embedding space mismatch: queries are in space {query_space!r} but {what} is in space "
            f"{index_space!r}; query it with the encoder of space {index_space!r} or rebuild the index"
        )


@dataclass
class ShardInfo:
    """One shard file: its vectors have global ids ``offset .. offset + count - 1``.

    ``inputs`` counts the input items the shard accounts for, duplicates dropped by dedup included, so that
    a resumed build knows how many items of its input to skip.
    """

    file: str
    offset: int
    count: int
    sha256: str
    inputs: int | None = None

    def __post_init__(self) -> None:
        if self.inputs is None:
            self.inputs = self.count


@dataclass
class Manifest:
    """What a database folder holds. ``nprobe`` is ``None`` for indexes without inverted lists (Flat)."""

    name: str
    kind: str
    dim: int
    space_id: str
    encoder_id: str
    factory: str
    nlist: int | None = None
    nprobe: int | None = None
    shards: list[ShardInfo] = field(default_factory=list)
    created: str = ""
    format_version: int = FORMAT_VERSION
    complete: bool = False
    build: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ntotal(self) -> int:
        """Number of vectors over all shards."""
        return sum(s.count for s in self.shards)

    @property
    def inputs(self) -> int:
        """Number of input items the listed shards account for (duplicates included)."""
        return sum(int(s.inputs or 0) for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "manifest") -> Manifest:
        """Build a manifest from parsed JSON, raising :class:`IndexFormatError` naming ``source`` if invalid."""
        if not isinstance(data, dict):
            raise IndexFormatError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(
                f"{source}: format_version {version!r} is not supported (this code reads version "
                f"{FORMAT_VERSION}); rebuild the database with this version"
            )
        missing = [k for k in ("name", "kind", "dim", "space_id", "encoder_id", "factory") if k not in data]
        if missing:
            raise IndexFormatError(f"{source}: missing keys {missing}; the manifest is incomplete or corrupt")
        try:
            shards = [ShardInfo(**s) for s in data.get("shards", [])]
            known = {f for f in cls.__dataclass_fields__ if f != "shards"}
            manifest = cls(shards=shards, **{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise IndexFormatError(f"{source}: malformed manifest entry ({exc})") from exc
        manifest._check(source)
        return manifest

    def _check(self, source: str) -> None:
        if self.kind not in KINDS:
            raise IndexFormatError(f"{source}: kind {self.kind!r} is not one of {KINDS}")
        if not isinstance(self.dim, int) or self.dim <= 0:
            raise IndexFormatError(f"{source}: dim {self.dim!r} is not a positive integer")
        expected = 0
        for s in self.shards:
            if s.offset != expected or s.count < 0:
                raise IndexFormatError(
                    f"{source}: shard {s.file} has offset {s.offset} and count {s.count}; expected offset "
                    f"{expected} (shards must be contiguous)"
                )
            expected += s.count

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Manifest:
        """Read ``<folder>/manifest.json``.

        Raises:
            IndexFormatError: the file is missing, not JSON, or not a manifest this version reads.
        """
        path = Path(folder) / MANIFEST_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise IndexFormatError(
                f"{path}: no manifest; {folder} is not a database folder (build one with `miner index`)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"{path}: cannot read the manifest ({exc})") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IndexFormatError(f"{path}: corrupt manifest, not valid JSON ({exc})") from exc
        return cls.from_dict(data, source=str(path))

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``<folder>/manifest.json`` atomically (temp file, fsync, ``os.replace``)."""
        self._check("manifest to save")
        path = Path(folder) / MANIFEST_FILE
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        atomic_write_bytes(path, text.encode("utf-8"))
        return path


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process umask (0o644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``.

    The file gets the mode a plain ``open()`` would give (``mkstemp`` alone makes it 0600, so a server running
    as another user could read every file of a database but its manifest).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(folder: str | os.PathLike[str]) -> list[str]:
    """Check a database folder against its manifest.

    Returns:
        One message per problem (missing or unreadable manifest, missing shard, checksum mismatch, corrupt
        store or a store whose row count differs), each naming the file; an empty list when all is well.
    """
    folder = Path(folder)
    try:
        manifest = Manifest.load(folder)
    except IndexFormatError as exc:
        return [str(exc)]
    problems: list[str] = []
    if not manifest.complete:
        problems.append(f"{folder / MANIFEST_FILE}: the build did not finish; resume it")
    for shard in manifest.shards:
        path = folder / shard.file
        if not path.is_file():
            problems.append(f"{path}: shard listed in the manifest is missing")
            continue
        digest = sha256_file(path)
        if digest != shard.sha256:
            problems.append(f"{path}: checksum mismatch (sha256 {digest}, manifest says {shard.sha256})")
    from index.store import STORE_FILE, Store  # the store module imports this one

    store_path = folder / STORE_FILE
    if store_path.exists() or manifest.build.get("store"):
        try:
            with Store.open(store_path) as store:
                problems += store.quick_check()
                if len(store) != manifest.ntotal and manifest.complete:
                    problems.append(
                        f"{store_path}: {len(store)} rows but the manifest lists {manifest.ntotal} vectors"
                    )
        except ValueError as exc:
            problems.append(str(exc))
    return problems
