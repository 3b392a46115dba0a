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
    model_id = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
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


def test_centred_spaces_share_the_base_teachers_cached_vectors(tmp_path: Path) -> None:
    """Two models distilled from one teacher with different centres embed a corpus once between them."""
    from miner.encoders.text import CenteredTextEncoder

    corpus = tmp_path / "en.txt"
    corpus.write_text("the cat\na dog\nthe house\n", encoding="utf-8")
    base = CountingEncoder()
    query = np.array([[0.0, 1.0, 0.0, 0.0]], dtype=np.float32)
    for centre in ([0.1, 0.0, 0.0, 0.0], [0.0, 0.2, 0.1, 0.0]):
        enc = CenteredTextEncoder(base, np.array(centre, dtype=np.float32), space_id=f"fake-4-c{centre[1]}")
        search, _ = corpus_database(corpus, enc, root=tmp_path / "home")
        scores, ids = search(query, 3)
        exact = enc.encode(["the cat", "a dog", "the house"]) @ query[0]  # the centred vectors themselves
        np.testing.assert_allclose(scores[0], np.sort(exact)[::-1], atol=1e-6)
    assert base.calls == 1 + 2  # the corpus once (cached), plus the two direct encode() calls above


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
