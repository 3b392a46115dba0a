"""The search side of `miner eval retrieval` (miner.eval_databases): corpus files, manifests, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from miner.eval_databases import corpus_database, is_speech_manifest, open_database


class CountingEncoder:
    """A text encoder stand-in: one-hot rows by sentence position, counting its calls."""

    dim = 4
    space_id = "fake-4"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        self.calls += 1
        return np.eye(self.dim, dtype=np.float32)[: len(texts)]


def test_corpus_is_embedded_once_then_read_from_cache(tmp_path: Path) -> None:
    corpus = tmp_path / "en.txt"
    corpus.write_text("the cat\na dog\nthe house\n", encoding="utf-8")
    enc = CountingEncoder()
    search, id_to_text = corpus_database(corpus, enc, root=tmp_path / "home")
    sims, ids = search(np.eye(4, dtype=np.float32)[[1]], 5)
    assert ids.shape == (1, 3) and sorted(ids[0].tolist()) == [0, 1, 2]  # k is capped at the corpus size
    assert ids[0, 0] == 1 and sims[0, 0] == 1.0 and id_to_text(1) == "a dog"
    corpus_database(corpus, enc, root=tmp_path / "home")
    assert enc.calls == 1
    corpus.write_text("the cat\na dog\n", encoding="utf-8")  # new content, new cache entry
    _, id_to_text = corpus_database(corpus, enc, root=tmp_path / "home")
    assert enc.calls == 2 and id_to_text(1) == "a dog"
    assert not list((tmp_path / "home").rglob(".*.tmp.npy"))


def test_empty_corpus_and_unknown_database_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no sentences"):
        corpus_database(empty, CountingEncoder(), root=tmp_path)
    monkeypatch.setenv("MINER_HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError, match="or pass a corpus file"):
        open_database("no-such-db", CountingEncoder())


def test_speech_manifests_are_told_from_text_files(tmp_path: Path) -> None:
    tsv, jsonl, text = tmp_path / "q.tsv", tmp_path / "q.jsonl", tmp_path / "c.tsv"
    tsv.write_text("id\taudio\ttext\nu1\ta.wav\thi\n", encoding="utf-8")
    jsonl.write_text('{"audio": "a.wav", "text": "hi"}\n', encoding="utf-8")
    text.write_text("id\ttext\ns1\thi\n", encoding="utf-8")
    assert is_speech_manifest(str(tsv)) and is_speech_manifest(str(jsonl))
    assert not is_speech_manifest(str(text)) and not is_speech_manifest(str(tmp_path / "missing.tsv"))
    (tmp_path / "bad.jsonl").write_text("not json\n", encoding="utf-8")
    assert not is_speech_manifest(str(tmp_path / "bad.jsonl"))
