"""T3 targets (the English source as a second target) and warm starts (init_from), on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._train_fixtures import make_config, read_metrics, write_tiny_corpus

# -- T3 targets and warm starts ------------------------------------------------------------------------------
_ADAPTER = {
    "head_only_updates": 40,
    "cache_features": True,
    "adapter_layers": 1,
    "adapter_dim": 8,
    "adapter_heads": 2,
    "adapter_ffn": 16,
    "contrastive_weight": 1.0,
    "temperature": 0.1,
    "center_targets": True,
}


def test_t3_adds_the_english_source_as_a_second_target(
    tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    """Same seed, same first batch: the T3 term is the T1 loss again when the source is the transcript itself,
    and a different loss when it is the English source."""
    from miner.train.loop import train

    same = write_tiny_corpus(tmp_path / "same")  # translation = transcript
    english = write_tiny_corpus(tmp_path / "english", english=True)
    kw = {**_ADAPTER, "max_updates": 1, "eval_every": 1}

    def first(corpus: Path, weight: float, name: str) -> tuple[float, dict]:
        out = tmp_path / name
        train(
            make_config(
                corpus,
                tiny_whisper_dir,
                spread_st_dir,
                out,
                translation_weight=weight,
                dev_manifest=corpus,
                **kw,
            )
        )
        metrics = read_metrics(out)
        return next(m["loss"] for m in metrics if "loss" in m), metrics[-1]

    t1, _ = first(same, 0.0, "t1")
    doubled, _ = first(same, 1.0, "t3-same")
    half, _ = first(same, 0.5, "t3-half")
    t3, dev = first(english, 1.0, "t3-english")
    assert doubled == pytest.approx(2 * t1, rel=1e-5)
    assert half == pytest.approx(1.5 * t1, rel=1e-5)
    assert abs(t3 - 2 * t1) > 1e-3  # the English sources are other targets
    assert dev["step"] == 1 and 0.0 <= dev["dev_r1_en"] <= 1.0  # X->EN among the distinct dev translations
    card = (tmp_path / "t3-half" / "final" / "MODEL_CARD.md").read_text()
    assert "T3: + 0.5 x the same against teacher(English source of t)" in card


def test_t3_negatives_from_every_english_source(
    tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    """translation_negatives = "all": the bank holds each distinct English source once, and the T3 InfoNCE
    term then differs from the in-batch one (the tiny corpus's batches hold a part of its sources)."""
    import numpy as np
    import torch

    from miner.train.data import read_manifest
    from miner.train.loop import train
    from miner.train.processes import Processes
    from miner.train.targets import build_targets

    english = write_tiny_corpus(tmp_path / "english", english=True)
    utts = read_manifest(english)

    def targets_for(negatives: str):
        cfg = make_config(
            english,
            tiny_whisper_dir,
            spread_st_dir,
            tmp_path / "t",
            translation_weight=1.0,
            translation_negatives=negatives,
            **_ADAPTER,
        )
        return build_targets(cfg, Processes(), torch.device("cpu"), utts, [])

    assert targets_for("batch").trans_bank is None  # only built when asked for
    targets = targets_for("all")
    sources = sorted({u.translation for u in utts})
    assert targets.trans_bank is not None and len(targets.trans_bank) == len(sources)
    np.testing.assert_allclose(
        targets.trans_bank[targets.train["trans_ids"]], targets.train["trans_targets"], atol=0
    )

    def first_loss(negatives: str) -> float:
        out = tmp_path / negatives
        train(
            make_config(
                english,
                tiny_whisper_dir,
                spread_st_dir,
                out,
                translation_weight=1.0,
                translation_negatives=negatives,
                batch_seconds=2.0,
                **{**_ADAPTER, "max_updates": 1},
            )
        )
        return next(m["loss"] for m in read_metrics(out) if "loss" in m)

    assert abs(first_loss("all") - first_loss("batch")) > 1e-4
    card = (tmp_path / "all" / "final" / "MODEL_CARD.md").read_text()
    assert "its InfoNCE over every distinct English source of the training set" in card


def test_t3_without_translations_says_what_is_missing(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    from miner.train.loop import train

    bare = tmp_path / "bare.tsv"
    lines = corpus.read_text(encoding="utf-8").splitlines()
    bare.write_text("\n".join(line.rsplit("\t", 1)[0] for line in lines) + "\n", encoding="utf-8")
    (tmp_path / "audio").symlink_to(corpus.parent / "audio")
    cfg = make_config(bare, tiny_whisper_dir, spread_st_dir, tmp_path / "run", translation_weight=1.0)
    with pytest.raises(ValueError, match="no row of .* has a translation column"):
        train(cfg)


def test_init_from_starts_from_the_model_with_a_fresh_schedule(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    from miner.train.loop import train

    kw = {**_ADAPTER, "eval_every": 5, "dev_manifest": corpus}
    first = train(make_config(corpus, tiny_whisper_dir, spread_st_dir, tmp_path / "a", max_updates=5, **kw))
    a_dev = [m["dev_loss"] for m in read_metrics(tmp_path / "a") if "dev_loss" in m]
    train(
        make_config(
            corpus, tiny_whisper_dir, spread_st_dir, tmp_path / "b", max_updates=3, init_from=first, **kw
        )
    )
    b = read_metrics(tmp_path / "b")
    b_dev = [m["dev_loss"] for m in b if "dev_loss" in m]
    assert b_dev[0] == pytest.approx(a_dev[-1], abs=1e-5)  # b's step 0 is a's final model
    assert [m["step"] for m in b if "loss" in m] == [1, 2, 3]  # a new run: its own steps and schedule
    assert f"Started from: weights of `{first}`" in (tmp_path / "b" / "final" / "MODEL_CARD.md").read_text()
    # Fewer training texts: another centre of the same teacher; the model moves to this run's space.
    from miner.encoders.samu import SpeechEncoder

    fewer = tmp_path / "fewer.tsv"
    fewer.write_text("\n".join(corpus.read_text(encoding="utf-8").splitlines()[:12]) + "\n", encoding="utf-8")
    (tmp_path / "audio").symlink_to(corpus.parent / "audio")
    moved = SpeechEncoder.from_pretrained(
        train(
            make_config(
                fewer, tiny_whisper_dir, spread_st_dir, tmp_path / "d", max_updates=1, init_from=first, **kw
            )
        )
    )
    before = SpeechEncoder.from_pretrained(first)
    assert moved.space_id.startswith("st-spread-16-c") and moved.space_id != before.space_id
    assert moved.config.extra["text_center"] != before.config.extra["text_center"]
    with pytest.raises(ValueError, match="init_from .* has adapter"):
        train(
            make_config(
                corpus,
                tiny_whisper_dir,
                spread_st_dir,
                tmp_path / "c",
                max_updates=3,
                init_from=first,
                **{**kw, "adapter_dim": 16},
            )
        )
