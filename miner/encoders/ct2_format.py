"""CTranslate2's ``model.bin`` format (binary versions 4 to 6): a reader into named numpy arrays.

The format is small and documented by CTranslate2's own writer (``python/ctranslate2/specs/model_spec.py``);
reading it here keeps the offline Whisper backbone free of any converter at run time.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_ct2_model"]

# CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 has no numpy dtype.
_CT2_DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_NP_DTYPES = {"float32": "<f4", "int8": "i1", "int16": "<i2", "int32": "<i4", "float16": "<f2"}
_SUPPORTED_BINARY_VERSIONS = (4, 5, 6)


class _Cursor:
    """Little-endian reads from a buffer, with errors that say where the file ended early."""

    def __init__(self, buf: Any, path: Path) -> None:
        self.buf, self.path, self.pos = buf, path, 0

    def take(self, n: int) -> int:
        start = self.pos
        if start + n > len(self.buf):
            raise ValueError(
                f"{self.path} ends at byte {len(self.buf)} but a field needs bytes {start}..{start + n}: the "
                "file is truncated (were all model.bin parts concatenated?)"
            )
        self.pos += n
        return start

    def unpack(self, fmt: str) -> int:
        return struct.unpack_from("<" + fmt, self.buf, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("H")  # length counts the trailing NUL
        start = self.take(n)
        return bytes(self.buf[start : start + n]).rstrip(b"\0").decode("utf-8")


def read_ct2_model(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Parse a CTranslate2 ``model.bin`` into named numpy arrays.

    The file is a header (uint32 binary version, spec name, uint32 spec revision, uint32 variable count),
    then per variable: uint16-length NUL-terminated name, uint8 rank, rank x uint32 dims, uint8 dtype id,
    uint32 byte count, raw bytes; then a uint32 alias count and (alias, target) name pairs. Strings are
    UTF-8; all integers little-endian.

    Args:
        path: the model.bin (all parts concatenated).

    Returns:
        ``(tensors, info)``. ``tensors`` maps names such as ``encoder/conv1/weight`` to arrays in their
        stored dtype (float16 stays float16; scalars are 0-d arrays; bfloat16 is widened to float32). Alias
        names map to the same array object as their target. ``info`` holds ``binary_version`` (int),
        ``spec`` (str, e.g. ``"WhisperSpec"``), ``revision`` (int), ``aliases`` (alias -> target) and
        ``dtypes`` (name -> stored dtype name).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported binary version, unknown dtype id, truncated file or trailing bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CTranslate2 model file at {path}")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _parse(buf, path)


def _parse(buf: Any, path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    cur = _Cursor(buf, path)
    version = cur.unpack("I")
    if version not in _SUPPORTED_BINARY_VERSIONS:
        raise ValueError(
            f"{path} has CTranslate2 binary version {version}; this reader supports "
            f"{_SUPPORTED_BINARY_VERSIONS}: re-convert the model with ctranslate2>=3"
        )
    spec, revision = cur.string(), cur.unpack("I")
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(cur.unpack("I")):
        name = cur.string()
        shape = tuple(cur.unpack("I") for _ in range(cur.unpack("B")))
        type_id = cur.unpack("B")
        if type_id not in _CT2_DTYPES:
            raise ValueError(
                f"{path}: variable {name!r} has unknown dtype id {type_id} (known: {_CT2_DTYPES})"
            )
        dtype = _CT2_DTYPES[type_id]
        num_bytes = cur.unpack("I")
        start = cur.take(num_bytes)
        item = 2 if dtype == "bfloat16" else np.dtype(_NP_DTYPES[dtype]).itemsize
        count = int(np.prod(shape, dtype=np.int64))
        if count * item != num_bytes:
            raise ValueError(f"{path}: variable {name!r} of shape {shape} {dtype} declares {num_bytes} bytes")
        if dtype == "bfloat16":  # bfloat16 is the top half of a float32
            raw = np.frombuffer(buf, dtype="<u2", count=count, offset=start).astype(np.uint32) << 16
            array = raw.view(np.float32).reshape(shape)
        else:  # copy: the arrays must outlive the mmap
            array = (
                np.frombuffer(buf, dtype=_NP_DTYPES[dtype], count=count, offset=start).reshape(shape).copy()
            )
        tensors[name], dtypes[name] = array, dtype
    aliases: dict[str, str] = {}
    if version >= 3:
        for _ in range(cur.unpack("I")):
            alias, target = cur.string(), cur.string()
            if target not in tensors:
                raise ValueError(f"{path}: alias {alias!r} points to unknown variable {target!r}")
            aliases[alias] = target
            tensors[alias], dtypes[alias] = tensors[target], dtypes[target]
    if cur.pos != len(buf):
        raise ValueError(f"{path}: {len(buf) - cur.pos} unexpected bytes after the last record")
    info = {
        "binary_version": version,
        "spec": spec,
        "revision": revision,
        "aliases": aliases,
        "dtypes": dtypes,
    }
    return tensors, info
