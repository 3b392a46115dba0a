"""Open-domain sentences for training and testing the offline model, from prose that ships in Debian packages.

Downloads the packages with ``apt-get download`` (no installation), extracts them, reads their books and
fortune cookies (``open_text_sources.py``), splits paragraphs into sentences, keeps the speakable ones and
aligns translations to the English original where a book is translated (same chapter, same paragraph
position, same sentence count: a structural alignment that uses no embedding model, so the test pairs do not
favour the text encoder that is evaluated). Whole chapters are held out for dev and test, so no test sentence
shares a document with a training sentence.

Writes ``<out>/open_text.tsv`` (UTF-8, header, no quoting; no field holds a tab or newline)::

    id  source  doc  para  sent  lang  text  translation  split

``translation`` is the aligned English sentence (the sentence itself for English rows of translated books;
empty where none is known), ``para``/``sent`` the positions in the document (consecutive sentences of one
paragraph can be joined into long utterances), and ``<out>/open_text_stats.json`` (counts by source, language,
split, and word-length quantiles). Usage::

    python scripts/gather_open_text.py --debs work/debs --out work/open_data [--download]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from open_text_sources import (  # noqa: E402
    Document,
    read_devref,
    read_fortunes,
    read_handbook,
    read_suffixed_html,
)

log = logging.getLogger("gather_open_text")

LANGS = ("en", "fr", "de", "es", "it", "pt", "nl", "pl", "ru", "sv")
PACKAGES = (
    "debian-handbook",
    *(f"debian-reference-{lang}" for lang in ("en", "de", "es", "fr", "it", "pt")),
    "debian-faq", *(f"debian-faq-{lang}" for lang in ("de", "fr", "it", "nl", "pt", "ru")),
    "maint-guide", *(f"maint-guide-{lang}" for lang in ("de", "es", "fr", "it", "ru")),
    "developers-reference", *(f"developers-reference-{lang}" for lang in ("de", "fr", "it", "ru")),
    "fortunes", *(f"fortunes-{lang}" for lang in ("de", "es", "it", "pl", "ru", "br")),
)  # fmt: skip
HEADER = ("id", "source", "doc", "para", "sent", "lang", "text", "translation", "split")
MIN_WORDS, MAX_WORDS = 4, 60
# Share of documents of the translated books held out (by a hash of the document id): test, then dev.
TEST_SHARE, DEV_SHARE = 0.10, 0.05
TEST_SOURCES = ("handbook",)  # the one book translated into all nine languages

_SENT_END = re.compile(r"(?<=[.!?…»\"”])\s+(?=[«\"„“¿¡(]?[A-ZÀ-ÖØ-ÞĄĆĘŁŃÓŚŹŻА-ЯЁ0-9])")
# C0/C1 control characters too: 16 of them came through from the books' HTML into the first gathering
_NOT_SPEAKABLE = re.compile(r"[\x00-\x1f\x7f-\x9f/\\$<>=_|{}\[\]#~*`^@%&+]|https?:|www\.|\.\w{2,4}\b(?<!\.\s)|\d{3,}")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph: split after . ! ? when a capital letter (or digit, quote) follows."""
    return [s.strip() for s in _SENT_END.split(paragraph) if s.strip()]


def speakable(sentence: str) -> bool:
    """A sentence a person would read aloud: 4-60 words, mostly letters, no paths, code, URLs or numbers."""
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or _NOT_SPEAKABLE.search(sentence):
        return False
    letters = len(_LETTER.findall(sentence))
    return letters >= 0.75 * len(sentence.replace(" ", "")) and sentence[-1] in ".!?…»\"”)"


def read_all(extracted: Path) -> Iterator[Document]:
    """Every document of every package extracted under ``extracted/<package>/``."""
    yield from read_handbook(extracted / "debian-handbook")
    for pkg in sorted(extracted.glob("debian-reference-*")):
        yield from read_suffixed_html(pkg, "reference", "usr/share/debian-reference")
    for pkg in sorted(extracted.glob("debian-faq*")):
        yield from read_suffixed_html(pkg, "faq", "usr/share/doc/debian/FAQ")
    for pkg in sorted(extracted.glob("maint-guide*")):
        yield from read_suffixed_html(pkg, "maint-guide", f"usr/share/doc/{pkg.name}/html")
    for pkg in sorted(extracted.glob("developers-reference*")):
        lang = pkg.name.removeprefix("developers-reference").lstrip("-") or "en"
        yield from read_devref(pkg, lang)
    for pkg in sorted(extracted.glob("fortunes*")):
        suffix = pkg.name.removeprefix("fortunes").lstrip("-")
        lang = {"": "en", "br": "pt"}.get(suffix, suffix)
        if lang in LANGS and pkg.name != "fortunes-min":
            yield from read_fortunes(pkg, lang)


def doc_split(doc: str, source: str) -> str:
    """test / dev / train for a document, stable across runs (hash of its id); only TEST_SOURCES are held out."""
    if source not in TEST_SOURCES:
        return "train"
    h = int(hashlib.sha1(doc.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < TEST_SHARE else "dev" if h < TEST_SHARE + DEV_SHARE else "train"


def align_to_english(doc: Document, english: Document | None) -> list[tuple[int, int, str, str]]:
    """(para, sent, sentence, English sentence or '') for the speakable sentences of one document.

    Paragraph i of a translation is paired with paragraph i of the English chapter when both chapters have the
    same number of paragraphs; within a pair, sentences are paired one to one when both have the same count. A
    pair is dropped as untranslated when the two texts are equal, and as misaligned when their lengths differ
    by more than a factor of 2.2.
    """
    en_paras = english.paragraphs if english and len(english.paragraphs) == len(doc.paragraphs) else None
    out: list[tuple[int, int, str, str]] = []
    for p, para in enumerate(doc.paragraphs):
        sents = split_sentences(para)
        en_sents = split_sentences(en_paras[p]) if en_paras else []
        paired = len(en_sents) == len(sents)
        for s, sent in enumerate(sents):
            if not speakable(sent):
                continue
            en = en_sents[s] if paired else ""
            if doc.lang != "en" and en:
                if en == sent:
                    continue  # an untranslated paragraph left in English
                ratio = len(sent) / max(1, len(en))
                if not (1 / 2.2 <= ratio <= 2.2) or not speakable(en):
                    en = ""
            if doc.lang != "en" and not en and english is not None and doc_split(doc.doc, doc.source) != "train":
                continue  # held-out sentences are only useful with their English reference
            out.append((p, s, sent, en))
    return out


def gather(extracted: Path) -> list[dict[str, str]]:
    """All rows of ``open_text.tsv``; texts are unique per language (first occurrence kept)."""
    docs = list(read_all(extracted))
    english = {d.doc: d for d in docs if d.lang == "en"}
    seen: set[tuple[str, str]] = set()
    rows: list[dict[str, str]] = []
    for doc in docs:
        if doc.lang not in LANGS:
            continue
        en_doc = english.get(doc.doc) if doc.source != "fortunes" else None
        for p, s, sent, en in align_to_english(doc, en_doc):
            if (doc.lang, sent) in seen:
                continue
            seen.add((doc.lang, sent))
            translation = sent if doc.lang == "en" and doc.source != "fortunes" else en
            uid = hashlib.sha1(f"{doc.doc}|{doc.lang}|{p}|{s}|{sent}".encode()).hexdigest()[:12]
            rows.append({
                "id": f"o{uid}_{doc.lang}", "source": doc.source, "doc": doc.doc, "para": str(p),
                "sent": str(s), "lang": doc.lang, "text": sent, "translation": translation,
                "split": doc_split(doc.doc, doc.source),
            })  # fmt: skip
    return rows


def stats(rows: Iterable[dict[str, str]]) -> dict:
    """Counts by source, language and split, and word-count quantiles per source."""
    rows = list(rows)
    by = Counter((r["source"], r["lang"], r["split"]) for r in rows)
    words: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        words[r["source"]].append(len(r["text"].split()))
    table: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for (src, lang, split), n in sorted(by.items()):
        table[src][lang][split] = n
    return {
        "rows": len(rows),
        "with_translation": sum(1 for r in rows if r["translation"] and r["lang"] != "en"),
        "by_source_lang_split": table,
        "words_quantiles_10_50_90": {
            s: [int(q) for q in np.quantile(w, [0.1, 0.5, 0.9])] for s, w in sorted(words.items())
        },
    }


def download(debs: Path) -> None:
    """``apt-get download`` the packages into ``debs`` (nothing is installed) and extract each one."""
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PACKAGES if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    for deb in sorted(debs.glob("*.deb")):
        target = debs / "x" / deb.name.split("_")[0]
        if not target.exists():
            # dpkg-deb makes only the last folder; extract beside the target and rename, so an interrupted
            # extraction is not taken for a finished one next time
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], check=True)
            partial.rename(target)


def write_tsv(path: Path, rows: list[dict[str, str]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write("\t".join(HEADER) + "\n")
        for r in rows:
            cells = [r[k] for k in HEADER]
            if any("\t" in c or "\n" in c for c in cells):
                raise ValueError(f"row {r['id']} holds a tab or newline")
            f.write("\t".join(cells) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debs", type=Path, required=True, help="folder of downloaded .deb files (x/ = extracted)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--download", action="store_true", help="apt-get download and extract missing packages")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.download:
        download(args.debs)
    rows = gather(args.debs / "x")
    args.out.mkdir(parents=True, exist_ok=True)
    write_tsv(args.out / "open_text.tsv", rows)
    summary = stats(rows)
    (args.out / "open_text_stats.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    log.info("%d rows (%d with an English translation) -> %s", summary["rows"], summary["with_translation"], args.out)


if __name__ == "__main__":
    main()
