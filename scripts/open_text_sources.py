"""Readers for the open-domain prose that ships in Debian packages: documents as lists of paragraphs.

Each reader takes the folder a ``.deb`` was extracted into (``dpkg-deb -x``) and yields :class:`Document`
objects. Parallel sources (a book and its translations) give every language's copy of a chapter the same
``doc`` id, so that chapters can be held out whole and aligned paragraph by paragraph.

Sources (Debian bookworm package names; see ``gather_open_text.py`` for the list that is downloaded):

- ``handbook``: The Debian Administrator's Handbook (``debian-handbook``): one book in en and all nine training
  languages, Publican HTML, ``<div class="para">`` paragraphs.
- ``reference``: Debian Reference (``debian-reference-*``), ``<p>`` paragraphs of ``chNN.<lang>.html``.
- ``faq``: the Debian FAQ (``debian-faq*``), ``<p>`` paragraphs.
- ``maint-guide``: the New Maintainers' Guide (``maint-guide*``), ``<p>`` paragraphs.
- ``devref``: the Developer's Reference (``developers-reference*``), reStructuredText sources.
- ``fortunes``: fortune cookies (``fortunes``, ``fortunes-{de,es,it,pl,ru,br}``): quotes, proverbs, jokes in
  everyday language; monolingual; one cookie per document; offensive sections skipped.

The system's own catalogs (``/usr/share/locale``) and Debian's translated manual pages are never read: they are
reserved for independent evaluation.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

# Debian locale folder / file suffix -> our language code.
HANDBOOK_LANGS = {
    "en-US": "en", "fr-FR": "fr", "de-DE": "de", "es-ES": "es", "it-IT": "it", "pt-BR": "pt",
    "nl-NL": "nl", "pl-PL": "pl", "ru-RU": "ru", "sv-SE": "sv",
}  # fmt: skip
FORTUNE_FOLDERS = {"en": "", "de": "de", "es": "es", "it": "it", "pl": "pl", "ru": "ru", "pt": ""}
# Cookie files that are not prose (pictures, word lists, bilingual jokes, offensive sections).
FORTUNE_SKIP = re.compile(r"(art|banner|woerterbuch|vornamen|namen|translations|quiz|definizioni|off)$")


@dataclass(frozen=True)
class Document:
    """One chapter / page / cookie in one language.

    Attributes:
        source: reader name (``handbook``, ``fortunes``, ...).
        doc: id shared by the translations of one chapter (``handbook/apt``); unique per cookie.
        lang: language code (``en``, ``de``, ...).
        paragraphs: the chapter's paragraphs in reading order, whitespace collapsed.
    """

    source: str
    doc: str
    lang: str
    paragraphs: tuple[str, ...]


def clean_space(text: str) -> str:
    """Unescape HTML entities and collapse whitespace (including no-break spaces) to single spaces."""
    return re.sub(r"\s+", " ", html.unescape(text).replace("\u00a0", " ")).strip()


class _ParagraphParser(HTMLParser):
    """Collects the text of paragraph elements, leaving out code blocks, screens and index terms."""

    SKIP = {"pre", "script", "style", "code", "kbd", "samp", "tt"}

    def __init__(self, para_test) -> None:
        super().__init__(convert_charrefs=True)
        self.para_test = para_test  # (tag, attrs) -> is a paragraph element
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, is_para, skipped)
        self.buffers: list[list[str]] = []
        self.paragraphs: list[str] = []
        self.skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "img", "meta", "link", "hr", "input"):
            return
        cls = dict(attrs).get("class") or ""
        skipped = tag in self.SKIP or "indexterm" in cls or "programlisting" in cls or "screen" in cls
        is_para = self.para_test(tag, cls) and not self.skip_depth
        if skipped:
            self.skip_depth += 1
            # An inline code element inside a sentence still stands for a word: keep a placeholder that the
            # sentence filter rejects, so a sentence never reads as if the word were not there.
            if self.buffers and tag in ("code", "kbd", "samp", "tt"):
                self.buffers[-1].append(" \x00 ")
        if is_para:
            self.buffers.append([])
        self.stack.append((tag, is_para, skipped))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            open_tag, is_para, skipped = self.stack.pop()
            if skipped:
                self.skip_depth -= 1
            if is_para:
                text = clean_space("".join(self.buffers.pop()))
                if text:
                    self.paragraphs.append(text)
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.buffers and not self.skip_depth:
            self.buffers[-1].append(data)


def html_paragraphs(path: Path, para_test) -> list[str]:
    """Paragraph texts of an HTML file, in document order (nested paragraphs come before their parent)."""
    parser = _ParagraphParser(para_test)
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser.paragraphs


def _is_p(tag: str, cls: str) -> bool:
    return tag == "p"


def _is_publican_para(tag: str, cls: str) -> bool:
    return tag == "div" and cls.split() == ["para"]


def read_handbook(root: Path) -> Iterator[Document]:
    """The Debian Administrator's Handbook: ``usr/share/doc/debian-handbook/html/<locale>/*.html``."""
    base = root / "usr/share/doc/debian-handbook/html"
    for locale, lang in HANDBOOK_LANGS.items():
        for page in sorted((base / locale).glob("*.html")):
            if page.stem in ("index", "ix01", "pr01"):
                continue
            paras = html_paragraphs(page, _is_publican_para)
            if paras:
                yield Document("handbook", f"handbook/{page.stem}", lang, tuple(paras))


def read_suffixed_html(root: Path, source: str, folder: str) -> Iterator[Document]:
    """Books whose pages are named ``<page>.<lang>.html`` (Debian Reference, FAQ, New Maintainers' Guide)."""
    base = root / folder
    for page in sorted(base.rglob("*.html")):
        parts = page.name.split(".")
        if len(parts) != 3:
            continue
        stem, lang = parts[0], parts[1]
        if lang == "pt_BR":
            lang = "pt"
        paras = html_paragraphs(page, _is_p)
        if paras:
            yield Document(source, f"{source}/{stem}", lang, tuple(paras))


_RST_SKIP = re.compile(r"^(\.\. |:|\s|[=\-~^*#+`'\"]{3,}\s*$)")


def read_devref(root: Path, lang: str) -> Iterator[Document]:
    """Developer's Reference reStructuredText sources: paragraphs are blocks separated by blank lines."""
    base = root / "usr/share/developers-reference"
    folder = base / "_sources" if lang == "en" else base / lang / "_sources"
    for page in sorted(folder.glob("*.rst.txt")):
        paras: list[str] = []
        for block in re.split(r"\n\s*\n", page.read_text(encoding="utf-8", errors="replace")):
            lines = block.splitlines()
            if not lines or any(_RST_SKIP.match(line) for line in lines):
                continue  # directives, indented literal blocks, headings, tables
            text = re.sub(r":[a-z]+:`([^`<]*)(<[^`]*>)?`", r"\1", " ".join(lines))  # :ref:`title <target>`
            text = re.sub(r"`([^`<]*)(<[^`]*>)?`_*", r"\1", text).replace("**", "").replace("``", "\x00")
            paras.append(clean_space(text))
        if paras:
            yield Document("devref", f"devref/{page.name.split('.')[0]}", lang, tuple(paras))


def read_fortunes(root: Path, lang: str) -> Iterator[Document]:
    """Fortune cookie files (``%``-separated); each cookie is one document of one paragraph."""
    base = root / "usr/share/games/fortunes"
    folder = base / FORTUNE_FOLDERS[lang] if FORTUNE_FOLDERS[lang] else base
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix in (".dat", ".u8") or path.name.endswith(".fortunes.dat"):
            continue
        name = path.name.removesuffix(".fortunes")
        if FORTUNE_SKIP.search(name) or (lang == "pt") != (name == "brasil"):
            continue
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("koi8-r" if lang == "ru" else "latin-1")
        for n, cookie in enumerate(re.split(r"^%\s*$", text, flags=re.M)):
            lines = [line for line in cookie.strip().splitlines() if not re.match(r"^\s*(--|—|-- )", line)]
            if not lines or any(re.match(r"^\s{4,}\S", line) for line in lines[1:]) and len(lines) > 6:
                continue  # attributions dropped; long indented blocks are poems or pictures
            body = clean_space(" ".join(lines))
            if body:
                yield Document("fortunes", f"fortunes/{lang}/{name}/{n}", lang, (body,))
