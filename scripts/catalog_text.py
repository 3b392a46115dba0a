"""Cleaning and filtering of gettext catalog strings for speech synthesis (used by gather_parallel_text.py).

A catalog string becomes a sentence espeak-ng can read: placeholders, markup and accelerators removed; strings
with URLs or code left are dropped; a translation must look like one (script, length ratio, not a copy).
"""

from __future__ import annotations

import html
import re
import unicodedata

__all__ = [
    "CYRILLIC_LANGS",
    "clean_text",
    "count_placeholders",
    "english_ok",
    "normalise_english",
    "translation_ok",
]

CYRILLIC_LANGS = {"ru", "uk", "bg", "be", "sr", "mk"}
_URL = re.compile(r"(https?://|www\.|\w@\w+\.\w)", re.I)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<!--.*?-->", re.S)
_PLACEHOLDERS = [
    re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S),  # Jinja / Django template expressions
    re.compile(r"\$\{[^}]*\}|%\{[^}]*\}"),  # ${name} (Zope), %{name} (Ruby / i18next)
    re.compile(r"%\([^)]*\)[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]"),  # %(name)s
    re.compile(r"%\d+\$[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]"),  # %1$s
    re.compile(r"%[-#0 +]*\d*(?:\.\d+)?(?:l{0,2}|h)[sdifgeExXrcuo]"),  # %s %d %.2f %5s %ld
    re.compile(r"%\d+|%[nL]\b"),  # %1 (Qt, JupyterLab), %n
    re.compile(r"\{[^{}]*\}"),  # {0} {name} {name!r} {0:.2f} {}
    re.compile(r"\$\w+"),  # $name (string.Template)
]
_ZERO_WIDTH = re.compile(r"[\u00ad\u200b\u200c\u200d\u2060\ufeff]")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]|[«\"“„‘']\s*[»\"”“’']")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.)?!;:])")
_DOUBLE_PUNCT = re.compile(r"([,;:])\s*(?=[,;:.!?])")
# Characters that espeak-ng would read out as symbol names or that mark code / markup left after cleaning.
_CODE_CHARS = re.compile(r"[`_=<>{}\[\]\\|#@^~$*%/]")
_LETTER = re.compile(r"[^\W\d_]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_NON_LATIN = re.compile(
    r"[\u0370-\u03ff\u0400-\u04ff\u0590-\u06ff\u0900-\u0dff\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]"
)


def clean_text(text: str) -> str:
    """Clean one catalog string for speech: ``""`` when it is unfit (URL, code, markup left).

    Steps: NFC; drop strings with URLs or e-mail addresses; strip HTML tags and unescape entities; strip
    placeholders (``%(name)s``, ``%s``, ``%1``, ``{0}``, ``{name}``, ``${name}``, ``{{ x }}``); strip
    accelerator markers (``&File``, ``_File``); tidy punctuation left behind; collapse whitespace. Strings that
    still hold code-like characters (backquotes, underscores, brackets, slashes...) are dropped.
    """
    text = unicodedata.normalize("NFC", _ZERO_WIDTH.sub("", text))
    if _URL.search(text):
        return ""
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    for pattern in _PLACEHOLDERS:
        text = pattern.sub(" ", text)
    text = re.sub(r"&(?=\w)", "", text)  # Qt / Windows accelerators: &File
    text = re.sub(r"(?<!\w)_(?=\w)", "", text)  # GTK mnemonics: _File
    text = text.replace("%%", "%")
    text = re.sub(r"\s+", " ", text)
    for _ in range(2):
        text = _EMPTY_BRACKETS.sub(" ", text)
        text = _DOUBLE_PUNCT.sub("", text)
        text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
        text = re.sub(r"\s+", " ", text)
    text = text.strip(" ,;:-–—")
    if not text or _CODE_CHARS.search(text) or not _LETTER.search(text):
        return ""
    return text


def count_placeholders(text: str) -> int:
    """Number of placeholders (``%s``, ``{name}``, ``${x}``...) in a raw catalog string."""
    n = 0
    for pattern in _PLACEHOLDERS:
        n += len(pattern.findall(text))
        text = pattern.sub(" ", text)
    return n


def normalise_english(text: str) -> str:
    """Key for de-duplication: case-folded, single spaces, no trailing punctuation or outer quotes."""
    key = re.sub(r"\s+", " ", text.casefold()).strip()
    key = re.sub(r"[\s.:!?…。]+$", "", key)
    return key.strip("\"'“”«» ")


def english_ok(text: str, min_words: int, max_words: int) -> bool:
    """True when a cleaned English string has ``min_words..max_words`` words and no non-Latin script."""
    n = len(text.split())
    return min_words <= n <= max_words and not _NON_LATIN.search(text)


def translation_ok(en: str, tr: str, lang: str, max_words: int) -> bool:
    """True when a cleaned translation looks like a real translation of ``en`` into ``lang``.

    Rejects untranslated copies, the wrong script, implausible length ratios (characters, 1/3..3) and strings
    longer than twice ``max_words`` words.
    """
    if not tr or tr.casefold() == en.casefold() or len(tr.split()) > 2 * max_words:
        return False
    if lang in CYRILLIC_LANGS:
        if not _CYRILLIC.search(tr):
            return False
    elif _NON_LATIN.search(tr):
        return False
    ratio = len(tr) / max(1, len(en))
    return 1 / 3 <= ratio <= 3
