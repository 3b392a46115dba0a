"""Manifests, clear errors for bad rows and missing audio, cached teacher embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from miner.audio import write_audio
from miner.train.data import ManifestError, load_utterance_audio, read_manifest, teacher_embeddings
from tests.conftest import make_clip


@pytest.fixture()
def clips(tmp_path: Path, rng: np.random.Generator) -> Path:
    write_audio(tmp_path / "wav" / "a.wav", make_clip(rng, 1.0))
    write_audio(tmp_path / "wav" / "b.wav", make_clip(rng, 2.0))
    return tmp_path


def test_tsv_manifest_relative_paths_and_probed_durations(clips: Path) -> None:
    m = clips / "m.tsv"
    m.write_text(
        "audio\ttext\tlang\tstart\tduration\n"
        'wav/a.wav\tthe "cat" sleeps\ten\t\t\n'
        "wav/b.wav\tle chat\tfr\t0.5\t1.0\n"
        "wav/b.wav\tder hund\tde\t1.5\t\n"
    )
    utts = read_manifest(m)
    assert [u.lang for u in utts] == ["en", "fr", "de"]
    assert utts[0].audio == clips / "wav" / "a.wav" and utts[0].text == 'the "cat" sleeps'  # no quoting
    assert utts[0].duration == pytest.approx(1.0) and utts[2].duration == pytest.approx(
        0.5
    )  # from the header
    assert utts[1].id == "wav/b.wav@0.500" and utts[1].row == 3
    assert len(load_utterance_audio(utts[1])) == 16000 and len(load_utterance_audio(utts[2])) == 8000


def test_jsonl_manifest(clips: Path) -> None:
    m = clips / "m.jsonl"
    rows = [{"id": "x1", "audio": "wav/a.wav", "text": "hi", "lang": "en", "translation": "salut"}]
    m.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (u,) = read_manifest(m)
    assert (u.id, u.translation, u.row) == ("x1", "salut", 1)


def test_missing_audio_names_file_and_line(clips: Path) -> None:
    m = clips / "m.tsv"
    m.write_text("audio\ttext\tlang\nwav/a.wav\thi\ten\nwav/nope.wav\tho\ten\n")
    with pytest.raises(ManifestError, match=r"m\.tsv line 3: audio file .*nope\.wav does not exist"):
        read_manifest(m)


def test_unreadable_audio_and_bad_rows(clips: Path) -> None:
    (clips / "wav" / "bad.wav").write_bytes(b"not audio at all")
    m = clips / "m.tsv"
    m.write_text("audio\ttext\tlang\nwav/bad.wav\thi\ten\n")
    with pytest.raises(ManifestError, match=r"line 2: unreadable audio file .*bad\.wav"):
        read_manifest(m)
    m.write_text("audio\ttext\tlang\nwav/a.wav\thi\n")
    with pytest.raises(ManifestError, match="line 2: 2 tab-separated cells"):
        read_manifest(m)
    m.write_text("audio\ttext\tlang\nwav/a.wav\thi\t\n")
    with pytest.raises(ManifestError, match="line 2: empty or missing 'lang'"):
        read_manifest(m)
    m.write_text("audio\ttext\tlang\tduration\nwav/a.wav\thi\ten\tlong\n")
    with pytest.raises(ManifestError, match="duration must be a number"):
        read_manifest(m)


class _CountingEncoder:
    space_id = "fake-4"
    dim = 4

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.array([[len(t), t.count("a"), 1.0, 0.5] for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_teacher_embeddings_once_per_text_and_cached(tmp_path: Path) -> None:
    enc = _CountingEncoder()
    texts = ["a cat", "a dog", "a cat", "hund"]
    emb = teacher_embeddings(enc, texts, tmp_path)
    assert emb.shape == (4, 4) and emb.dtype == np.float32
    assert sorted(enc.calls[0]) == ["a cat", "a dog", "hund"]  # duplicates embedded once
    np.testing.assert_array_equal(emb[0], emb[2])
    (cache,) = tmp_path.glob("teacher-fake-4-*.npy")
    again = teacher_embeddings(enc, texts, tmp_path)
    assert len(enc.calls) == 1 and np.array_equal(again, emb)  # second call: from the cache
    more = teacher_embeddings(enc, [*texts, "neu", "a dog"], tmp_path)
    assert len(enc.calls) == 2 and len(list(tmp_path.glob("teacher-*.npy"))) == 2  # other texts, other key
    assert enc.calls[1] == ["neu"]  # only the text no cached list holds
    np.testing.assert_array_equal(more[:4], emb)
    np.testing.assert_array_equal(more[5], emb[1])
    np.testing.assert_allclose(more[4], enc.encode(["neu"])[0], rtol=1e-6)
    assert cache.is_file()


def test_teacher_cache_from_before_text_lists_is_listed_on_its_first_hit(tmp_path: Path) -> None:
    enc = _CountingEncoder()
    texts = ["ein haus", "a house"]
    emb = teacher_embeddings(enc, texts, tmp_path)
    (listed,) = tmp_path.glob("teacher-*.texts.jsonl")
    listed.unlink()  # what older versions left: the array alone
    assert np.array_equal(teacher_embeddings(enc, texts, tmp_path), emb) and listed.is_file()
    teacher_embeddings(enc, [*texts, "une maison"], tmp_path)
    assert enc.calls[-1] == ["une maison"] and len(enc.calls) == 2
