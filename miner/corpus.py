"""Read text corpora into :class:`~miner.types.Sentence` records with stable ids, streaming.

Formats (``fmt="auto"`` picks by extension, ``.gz`` allowed for the line formats):

- ``txt``: one sentence per line; id ``<file name>:<line>``.
- ``tsv``: a header row naming the columns; ``id_column`` gives the id (else ``<file name>:<line>``),
  ``text_column`` the sentence, an optional ``lang`` column the language. Fields are split on tabs (no quoting).
- ``jsonl``: one JSON object per line, same column names.
- ``parquet``: read in record batches with pyarrow; ``line`` is the 1-based row number.

Blank lines (and empty texts) are skipped and counted in a :class:`CorpusStats` the caller may pass.
Undecodable bytes, malformed rows and texts holding a NUL or a lone surrogate (:func:`bad_character`: a NUL
makes a C tokenizer read only the text's prefix, a lone surrogate cannot be encoded) raise :class:`CorpusError`
naming ``file:line``, unless ``skip_bad_lines`` (then they are counted and skipped). Other control characters
pass: tokenizers drop them, and real corpora hold some (backspaces, C1 codes of mis-decoded text).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from miner.types import Sentence

logger = logging.getLogger(__name__)

FORMATS = ("txt", "tsv", "jsonl", "parquet")

# C0 controls but tab, CR and LF; DEL; C1 controls; lone surrogates (JSON "\ud800" decodes to one; UTF-8
# cannot encode it).
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# what corrupts an embedding silently (NUL: C strings end there) or cannot be encoded (lone surrogates)
_HARMFUL_CHARS = re.compile("[\x00\ud800-\udfff]")


def bad_character(text: str, controls: bool = True) -> str | None:
    """Describe the first refused character in ``text``, e.g. ``"U+0000 at character 3"``; None when none.

    Args:
        text: the text.
        controls: refuse every control character (C0 but tab, CR and LF; DEL; C1) and lone surrogates, as the
            API does with queries; ``False``: only NUL and lone surrogates, as corpora are read.
    """
    m = (_CONTROL_CHARS if controls else _HARMFUL_CHARS).search(text)
    if m is None:
        return None
    return f"U+{ord(m.group()):04X} at character {m.start() + 1}"


_EXTENSIONS = {".txt": "txt", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


class CorpusError(ValueError):
    """A corpus file cannot be read; the message names the file (and line) and the fix."""


@dataclass
class CorpusStats:
    """Counts updated while a corpus is read (one object may accumulate over several files)."""

    lines: int = 0  # lines (or parquet rows) seen
    sentences: int = 0  # sentences yielded
    blank: int = 0  # blank lines / empty texts skipped
    bad: int = 0  # undecodable, malformed or control-character lines skipped (skip_bad_lines=True)


def detect_format(path: str | os.PathLike[str]) -> str:
    """Corpus format from the file name (``.txt``, ``.tsv``, ``.jsonl``, ``.parquet``, optionally ``.gz``)."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = _EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise CorpusError(
            f"{p}: cannot tell the corpus format from the extension; pass fmt= one of {FORMATS} "
            "(or name the file .txt / .tsv / .jsonl / .parquet)"
        )
    return fmt


def read_corpus(
    path: str | os.PathLike[str],
    *,
    fmt: str = "auto",
    lang: str | None = None,
    id_column: str = "id",
    text_column: str = "text",
    skip_bad_lines: bool = False,
    stats: CorpusStats | None = None,
    id_prefix: str | None = None,
) -> Iterator[Sentence]:
    """Stream the sentences of one corpus file.

    Args:
        path: the file.
        fmt: ``auto``, ``txt``, ``tsv``, ``jsonl`` or ``parquet``.
        lang: language of every sentence; when None a ``lang`` column / key is used where present.
        id_column: column / key holding the sentence id (tsv, jsonl, parquet); ids default to
            ``<prefix>:<line>`` when the column is absent.
        text_column: column / key holding the sentence.
        skip_bad_lines: skip (and count) undecodable or malformed lines instead of raising.
        stats: counts to update while reading.
        id_prefix: prefix of generated ids (default: the file's name).

    Returns:
        An iterator of sentences in file order, ``source`` = the path as given, ``line`` = 1-based line (or row) number.

    Raises:
        CorpusError: missing file or unknown format (at once); undecodable bytes or a malformed row (while
            iterating, naming file:line).
    """
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"{p}: corpus file not found")
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt not in FORMATS:
        raise CorpusError(f"{p}: unknown corpus format {fmt!r}; use one of {FORMATS}")
    ctx = _Context(
        path=p,
        lang=lang,
        id_column=id_column,
        text_column=text_column,
        skip_bad=skip_bad_lines,
        stats=stats if stats is not None else CorpusStats(),
        prefix=id_prefix if id_prefix is not None else _base_name(p),
    )
    if fmt == "parquet":
        return _read_parquet(ctx)
    return _read_lines(ctx, {"txt": _read_txt, "tsv": _read_tsv, "jsonl": _read_jsonl}[fmt])


def _read_lines(ctx: _Context, reader: Any) -> Iterator[Sentence]:
    with _open_binary(ctx.path) as f:
        yield from reader(ctx, f)


@dataclass
class _Context:
    path: Path
    lang: str | None
    id_column: str
    text_column: str
    skip_bad: bool
    stats: CorpusStats
    prefix: str

    def bad(self, line: int, why: str) -> None:
        """Count a bad line when skipping, else raise naming file:line."""
        if self.skip_bad:
            self.stats.bad += 1
            logger.warning("%s:%d: %s (skipped)", self.path, line, why)
            return
        raise CorpusError(
            f"{self.path}:{line}: {why}; fix the file or pass --skip-bad-lines (skip_bad_lines=True in Python)"
        )

    def sentence(self, line: int, text: Any, sid: Any = None, lang: Any = None) -> Sentence | None:
        if text is None or (isinstance(text, str) and not text.strip()):
            self.stats.blank += 1
            return None
        if not isinstance(text, str):
            self.bad(line, f"column {self.text_column!r} is {type(text).__name__}, not a string")
            return None
        where = bad_character(text, controls=False)
        if where is not None:
            self.bad(line, f"the text holds character {where} (a NUL cuts the text in C tokenizers)")
            return None
        self.stats.sentences += 1
        return Sentence(
            id=str(sid) if sid is not None and sid != "" else f"{self.prefix}:{line}",
            text=text.strip(),
            lang=self.lang if self.lang is not None else (str(lang) if lang else None),
            source=str(self.path),
            line=line,
        )


def _base_name(p: Path) -> str:
    return p.name[:-3] if p.name.lower().endswith(".gz") else p.name


def _open_binary(p: Path) -> IO[bytes]:
    try:
        f = gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")  # noqa: SIM115
        return cast(IO[bytes], f)
    except OSError as exc:
        raise CorpusError(f"{p}: cannot open ({exc})") from exc


def _lines(ctx: _Context, f: IO[bytes]) -> Iterator[tuple[int, str]]:
    """(line number, decoded line without its end) for every line; decoding errors go to ``ctx.bad``."""
    lineno = 0
    try:
        for raw in f:
            lineno += 1
            ctx.stats.lines += 1
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # UTF-8 byte order mark
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                ctx.bad(lineno, f"invalid UTF-8 at byte {exc.start} ({raw[exc.start : exc.start + 4]!r})")
                continue
            yield lineno, line.rstrip("\r\n")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise CorpusError(f"{ctx.path}:{lineno + 1}: cannot read ({exc})") from exc


def _read_txt(ctx: _Context, f: IO[bytes]) -> Iterator[Sentence]:
    for lineno, line in _lines(ctx, f):
        s = ctx.sentence(lineno, line)
        if s is not None:
            yield s


def _read_tsv(ctx: _Context, f: IO[bytes]) -> Iterator[Sentence]:
    header: list[str] | None = None
    for lineno, line in _lines(ctx, f):
        if header is None:
            if not line.strip():
                ctx.stats.blank += 1
                continue
            header = line.split("\t")
            if ctx.text_column not in header:
                raise CorpusError(
                    f"{ctx.path}:{lineno}: the header {header} has no {ctx.text_column!r} column; pass "
                    "text_column= (TSV files need a header row)"
                )
            text_i = header.index(ctx.text_column)
            id_i = header.index(ctx.id_column) if ctx.id_column in header else None
            lang_i = header.index("lang") if "lang" in header else None
            continue
        if not line.strip():
            ctx.stats.blank += 1
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            ctx.bad(lineno, f"{len(fields)} tab-separated fields, the header has {len(header)}")
            continue
        s = ctx.sentence(
            lineno,
            fields[text_i],
            fields[id_i] if id_i is not None else None,
            fields[lang_i] if lang_i is not None else None,
        )
        if s is not None:
            yield s


def _read_jsonl(ctx: _Context, f: IO[bytes]) -> Iterator[Sentence]:
    for lineno, line in _lines(ctx, f):
        if not line.strip():
            ctx.stats.blank += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            ctx.bad(lineno, f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict) or ctx.text_column not in obj:
            ctx.bad(lineno, f"expected a JSON object with a {ctx.text_column!r} key")
            continue
        s = ctx.sentence(lineno, obj[ctx.text_column], obj.get(ctx.id_column), obj.get("lang"))
        if s is not None:
            yield s


def _read_parquet(ctx: _Context, batch_size: int = 8192) -> Iterator[Sentence]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise CorpusError(f"{ctx.path}: reading parquet needs pyarrow (pip install pyarrow)") from exc
    try:
        pf = pq.ParquetFile(ctx.path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a corrupt file
        raise CorpusError(f"{ctx.path}: not a readable parquet file ({exc})") from exc
    names = pf.schema_arrow.names
    if ctx.text_column not in names:
        raise CorpusError(f"{ctx.path}: no {ctx.text_column!r} column among {names}; pass text_column=")
    columns = [c for c in (ctx.text_column, ctx.id_column, "lang") if c in names]
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_size, columns=list(dict.fromkeys(columns))):
            data = batch.to_pydict()
            texts = data[ctx.text_column]
            ids = data.get(ctx.id_column, [None] * len(texts))
            langs = data.get("lang", [None] * len(texts))
            for text, sid, lg in zip(texts, ids, langs, strict=True):
                row += 1
                ctx.stats.lines += 1
                s = ctx.sentence(row, text, sid, lg)
                if s is not None:
                    yield s
    except CorpusError:
        raise
    except Exception as exc:
        raise CorpusError(f"{ctx.path}: row {row + 1}: cannot read ({exc})") from exc
