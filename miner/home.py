"""The data root (``MINER_HOME``, default ``./data``) and safe names inside it."""

from __future__ import annotations

import os
import re
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root`` if given, else ``$MINER_HOME``, else ``./data``."""
    return Path(root if root is not None else os.environ.get("MINER_HOME", "data")).expanduser()


def check_name(name: str, what: str = "database") -> str:
    """Return ``name`` if it is a plain name (letters, digits, ``. _ -``), else raise ValueError.

    Plain names cannot escape the data root (no ``/``, no ``..``).
    """
    if not _NAME.match(name) or name in {".", ".."} or ".." in name:
        raise ValueError(
            f"invalid {what} name {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (no slashes)"
        )
    return name
