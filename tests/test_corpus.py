"""miner.corpus: txt / tsv / jsonl / parquet readers, stable ids, blank and bad lines."""

from __future__ import annotations

import gzip
import json

import pytest

from miner.corpus import CorpusError, CorpusStats, detect_format, read_corpus
from miner.types import Sentence


def test_plain_text_ids_are_file_and_line(tmp_path):
    path = tmp_path / "en.txt"
    path.write_bytes("\ufeffHello world\n\n  \nZweite Zeile  \r\nlast line without newline".encode())
    stats = CorpusStats()
    out = list(read_corpus(path, lang="en", stats=stats))
    assert out == [
        Sentence(id="en.txt:1", text="Hello world", lang="en", source=str(path), line=1),
        Sentence(id="en.txt:4", text="Zweite Zeile", lang="en", source=str(path), line=4),
        Sentence(id="en.txt:5", text="last line without newline", lang="en", source=str(path), line=5),
    ]
    assert stats == CorpusStats(lines=5, sentences=3, blank=2, bad=0)


def test_gzip_and_id_prefix(tmp_path):
    path = tmp_path / "fr.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("un\ndeux\n")
    assert [s.id for s in read_corpus(path)] == ["fr.txt:1", "fr.txt:2"]
    assert [s.id for s in read_corpus(path, id_prefix="corpusA/fr")] == ["corpusA/fr:1", "corpusA/fr:2"]


def test_bad_bytes_raise_with_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nbro\xffken\nfine again\n")
    it = read_corpus(path)
    assert next(it).text == "fine"
    with pytest.raises(CorpusError, match=r"bad\.txt:2: invalid UTF-8 at byte 3.*skip_bad_lines"):
        next(it)


def test_skip_bad_lines_counts_them(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nbro\xffken\nfine again\n")
    stats = CorpusStats()
    assert [s.line for s in read_corpus(path, skip_bad_lines=True, stats=stats)] == [1, 3]
    assert stats.bad == 1 and stats.sentences == 2


def test_tsv_uses_header_columns(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("id\tlang\ttext\nA1\tde\tHallo\nA2\tfr\t\nA3\tfr\tBonjour\n\n", encoding="utf-8")
    stats = CorpusStats()
    out = list(read_corpus(path, stats=stats))
    assert [(s.id, s.text, s.lang, s.line) for s in out] == [
        ("A1", "Hallo", "de", 2),
        ("A3", "Bonjour", "fr", 4),
    ]
    assert stats.blank == 2  # the empty text and the blank line
    assert [s.lang for s in read_corpus(path, lang="xx")] == ["xx", "xx"]  # lang= wins over the column


def test_tsv_without_id_column_and_custom_text_column(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("sentence\tscore\nHallo\t1\n", encoding="utf-8")
    assert [s.id for s in read_corpus(path, text_column="sentence")] == ["c.tsv:2"]
    with pytest.raises(CorpusError, match=r"c\.tsv:1: the header .* no 'text' column"):
        list(read_corpus(path))


def test_tsv_wrong_field_count_names_the_line(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("id\ttext\nA\tok\nB\ttoo\tmany\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"c\.tsv:3: 3 tab-separated fields"):
        list(read_corpus(path))
    assert [s.id for s in read_corpus(path, skip_bad_lines=True)] == ["A"]


def test_jsonl(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [
        json.dumps({"id": 7, "text": "sieben", "lang": "de"}),
        "",
        json.dumps({"text": "no id"}),
        json.dumps({"id": "x", "text": None}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = CorpusStats()
    out = list(read_corpus(path, stats=stats))
    assert [(s.id, s.text, s.lang) for s in out] == [("7", "sieben", "de"), ("c.jsonl:3", "no id", None)]
    assert stats.blank == 2


def test_jsonl_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: invalid JSON"):
        list(read_corpus(path))
    path.write_text('{"text": "a"}\n["a"]\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: expected a JSON object"):
        list(read_corpus(path))


def test_parquet_streams_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    table = pa.table({"uid": ["a", "b", "c", "d"], "text": ["one", None, "three", " "], "lang": ["en"] * 4})
    pq.write_table(table, path, row_group_size=2)
    stats = CorpusStats()
    out = list(read_corpus(path, id_column="uid", stats=stats))
    assert [(s.id, s.text, s.lang, s.line) for s in out] == [("a", "one", "en", 1), ("c", "three", "en", 3)]
    assert stats == CorpusStats(lines=4, sentences=2, blank=2, bad=0)


def test_corrupt_parquet_names_the_file(tmp_path):
    path = tmp_path / "c.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(CorpusError, match=r"c\.parquet"):
        list(read_corpus(path))


def test_format_detection_and_errors(tmp_path):
    assert detect_format("a/b.TSV") == "tsv"
    assert detect_format("x.jsonl.gz") == "jsonl"
    with pytest.raises(CorpusError, match="fmt="):
        detect_format("corpus.dat")
    with pytest.raises(CorpusError, match="not found"):
        read_corpus(tmp_path / "missing.txt")  # raised at once, before iterating
    (tmp_path / "c.dat").write_text("a\n")
    assert [s.text for s in read_corpus(tmp_path / "c.dat", fmt="txt")] == ["a"]
    with pytest.raises(CorpusError, match="unknown corpus format 'xml'"):
        read_corpus(tmp_path / "c.dat", fmt="xml")


def test_reading_streams_without_loading_the_file(tmp_path):
    import tracemalloc

    path = tmp_path / "big.txt"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(100_000):
            f.write(f"line {i:06d} of a corpus that is much larger than a read buffer\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        it = read_corpus(path)
        first = [next(it) for _ in range(3)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size / 10, f"reading 3 lines allocated {peak} bytes of a {size}-byte file"
    assert [s.text[:11] for s in first] == ["line 000000", "line 000001", "line 000002"]
    assert sum(1 for _ in it) == 99_997
