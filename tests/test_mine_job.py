"""`miner mine` end to end with a tiny SAMU model, a real database on disk and planted pairs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from miner.audio import write_audio
from miner.cli import app
from miner.encoders.samu import SpeechEncoder
from miner.mine_job import MineOptions, database_target, run_mine
from tests.conftest import make_clip

runner = CliRunner()
N_CLIPS, N_PLANTED, DIM = 8, 5, 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_whisper_dir: Path, tiny_st_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("mine")
    rng = np.random.default_rng(11)
    audio = root / "audio"
    clips = [make_clip(rng, 1.0 + 0.25 * i) for i in range(N_CLIPS)]
    for i, c in enumerate(clips):
        write_audio(audio / ("fr" if i % 2 else "de") / f"clip{i}.flac", c)
    (audio / "broken.flac").write_bytes(b"definitely not audio")
    model = SpeechEncoder.from_backbone(
        str(tiny_whisper_dir), dim=DIM, space_id="st-model-16", teacher=str(tiny_st_dir)
    )
    model_dir = model.save_pretrained(root / "samu")
    x = SpeechEncoder.from_pretrained(model_dir).encode(clips)
    # Text side: exact copies of the first N_PLANTED clip embeddings (in shuffled rows) among random distractors.
    # A random tiny backbone gives all clips similar embeddings (cosines 0.75-0.99), so the tests mine with k=1:
    # a planted pair then scores exactly 1 (its cosine is the best of both neighbourhoods) and any other < 1.
    distractors = rng.standard_normal((40, DIM)).astype(np.float32)
    order = rng.permutation(N_PLANTED + 40)
    vectors = np.concatenate([x[:N_PLANTED], distractors])[order]
    texts = [f"planted {i}" for i in range(N_PLANTED)] + [f"distractor {i}" for i in range(40)]
    texts = [texts[j] for j in order]
    (root / "corpus.txt").write_text("\n".join(texts) + "\n")
    np.save(root / "emb.npy", vectors)
    result = runner.invoke(
        app,
        [
            "index",
            "build",
            "--name",
            "en",
            "--input",
            str(root / "corpus.txt"),
            "--embeddings",
            str(root / "emb.npy"),
            "--space-id",
            "st-model-16",
            "--shard-size",
            "10",
            "--home",
            str(root / "home"),
        ],
    )
    assert result.exit_code == 0, result.output
    return {"root": root, "audio": audio, "model": model_dir}


def _read_pairs(out: Path) -> list[dict[str, str]]:
    with (out / "pairs.tsv").open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_cli_recovers_exactly_the_planted_pairs(setup: dict) -> None:
    out = setup["root"] / "out"
    result = runner.invoke(
        app,
        [
            "mine",
            "--audio-dir",
            str(setup["audio"]),
            "--text-db",
            "en",
            "--out",
            str(out),
            "--model",
            str(setup["model"]),
            "-k",
            "1",
            "--threshold",
            "0.999",
            "--home",
            str(setup["root"] / "home"),
        ],
    )
    assert result.exit_code == 0, result.output
    pairs = _read_pairs(out)
    got = sorted((Path(p["audio"]).stem, p["text"]) for p in pairs)
    assert got == sorted((f"clip{i}", f"planted {i}") for i in range(N_PLANTED))
    scores = [float(p["score"]) for p in pairs]
    assert scores == sorted(scores, reverse=True) and all(s > 0.999 for s in scores)
    assert all(p["direction"] == "speech->text" and float(p["start"]) == 0.0 for p in pairs)
    failures = (out / "failures.tsv").read_text()
    assert "broken.flac" in failures  # reported, not fatal
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == N_CLIPS + 1 and summary["files_failed"] == 1 and summary["segments"] == N_CLIPS
    assert summary["pairs"] == N_PLANTED and set(summary["seconds"]) >= {"segment_embed", "mine", "total"}
    lines = (out / "pairs.jsonl").read_text().splitlines()
    meta = json.loads(lines[0])["provenance"]
    assert meta["space_id"] == "st-model-16" and meta["option_k"] == 1 and meta["option_mode"] == "max"
    first = json.loads(lines[1])
    assert first["cosine"] == pytest.approx(1.0, abs=1e-4) and first["target"]["text"].startswith("planted")


def test_resume_after_crash_equals_uninterrupted_run(setup: dict) -> None:
    home = setup["root"] / "home"
    opts = MineOptions(k=1, threshold=0.999)

    def run(out: Path, crash: int | None = None):  # type: ignore[no-untyped-def]
        model = SpeechEncoder.from_pretrained(setup["model"])
        return run_mine(
            setup["audio"],
            out,
            speech_encoder=model,
            target="en",
            target_kind="text",
            open_target=lambda: database_target(home / "en"),
            opts=opts,
            progress=False,
            crash_after_files=crash,
        )

    clean = setup["root"] / "clean"
    run(clean)
    crashed = setup["root"] / "crashed"
    with pytest.raises(RuntimeError, match="injected crash"):
        run(crashed, crash=3)
    assert not (crashed / "pairs.tsv").exists()
    summary = run(crashed)
    assert summary.files_cached == 3  # finished files were not embedded again
    assert (crashed / "pairs.tsv").read_text() == (clean / "pairs.tsv").read_text()


def test_space_mismatch_and_bad_options_are_clear(setup: dict, tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("a\nb\n")
    np.save(tmp_path / "e.npy", np.eye(2, 16, dtype=np.float32))
    home = tmp_path / "home"
    runner.invoke(
        app,
        [
            "index",
            "build",
            "--name",
            "other",
            "--input",
            str(corpus),
            "--embeddings",
            str(tmp_path / "e.npy"),
            "--space-id",
            "labse-768",
            "--home",
            str(home),
        ],
    )
    result = runner.invoke(
        app,
        [
            "mine",
            "--audio-dir",
            str(setup["audio"]),
            "--text-db",
            "other",
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(setup["model"]),
            "--home",
            str(home),
        ],
    )
    assert (
        result.exit_code != 0
        and "labse-768" in str(result.exception)
        and "st-model-16" in str(result.exception)
    )
    result = runner.invoke(
        app,
        [
            "mine",
            "--audio-dir",
            str(setup["audio"]),
            "--text-db",
            "other",
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(setup["model"]),
            "--mode",
            "best",
        ],
    )
    assert result.exit_code != 0 and "best" in str(result.exception)
    base = ["mine", "--audio-dir", str(setup["audio"]), "--text-db", "other", "--out", str(tmp_path / "o")]
    for flag, value, message in [
        ("--backward", "some", "--backward 'some': use auto, candidates or all"),
        ("--backward-index", "hnsw", "--backward-index 'hnsw': use auto, flat, ivf"),
    ]:
        result = runner.invoke(app, [*base, flag, value])  # refused before any model loads
        assert result.exit_code != 0 and message in result.output + str(result.exception)


def test_export_formats(setup: dict, tmp_path: Path) -> None:
    out = setup["root"] / "out"
    if not (out / "pairs.tsv").exists():
        pytest.skip("needs the pairs of test_cli_recovers_exactly_the_planted_pairs")
    for fmt, manifest in (
        ("fairseq-s2t", "train.tsv"),
        ("hf-audiofolder", "metadata.csv"),
        ("moses", "train.en"),
    ):
        result = runner.invoke(
            app, ["export", "--pairs", str(out), "--out", str(tmp_path / fmt), "--format", fmt]
        )
        assert result.exit_code == 0, result.output
        assert len((tmp_path / fmt / manifest).read_text().splitlines()) >= N_PLANTED
        assert len(list((tmp_path / fmt / "data").glob("*.flac"))) == N_PLANTED
    header = (tmp_path / "fairseq-s2t" / "train.tsv").read_text().splitlines()[0]
    assert header.split("\t") == ["id", "audio", "n_frames", "tgt_text", "speaker"]
