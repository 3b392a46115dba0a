"""Speech model strings and fusion maths: the spec grammar (``miner.encoders.speech_spec``), ``fuse`` and the
weight chooser (``miner.encoders.fusion``), on hand-made data. The encoders themselves: ``test_speech_kinds.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from miner.encoders.fusion import FUSION_GRID, choose_fusion_weight, fuse
from miner.encoders.speech_spec import (
    SpeechSpec,
    SpeechSpecError,
    paired_text_name,
    parse_speech_spec,
    spec_space,
)


# -- the spec grammar -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("runs/demo/final", SpeechSpec("samu", "runs/demo/final")),
        ("org/samu-model", SpeechSpec("samu", "org/samu-model")),
        ("samu:runs/x", SpeechSpec("samu", "runs/x")),
        ("samu", SpeechSpec("samu", "samu")),  # a bare word is a folder, as before kinds existed
        ("asr", SpeechSpec("asr", None)),
        ("ASR:runs/x", SpeechSpec("asr", "runs/x")),
        ("asr,lang=fr", SpeechSpec("asr", None, None, "fr")),
        ("fused", SpeechSpec("fused", None)),
        ("fused:runs/x", SpeechSpec("fused", "runs/x")),
        ("fused,w=0.3:runs/x", SpeechSpec("fused", "runs/x", 0.3)),
        ("fused, w = 1 ,lang=de:/abs/x", SpeechSpec("fused", "/abs/x", 1.0, "de")),
        ("fused,w=0", SpeechSpec("fused", None, 0.0)),
    ],
)
def test_spec_forms_parse_and_round_trip(text: str, expected: SpeechSpec) -> None:
    spec = parse_speech_spec(text)
    assert spec == expected
    assert parse_speech_spec(str(spec)) == spec


def test_an_existing_path_is_a_samu_model_whatever_it_contains(tmp_path: Path) -> None:
    odd = tmp_path / "whisper:v2,w=3"
    odd.mkdir()
    assert parse_speech_spec(str(odd)) == SpeechSpec("samu", str(odd))
    assert parse_speech_spec("./asr") == SpeechSpec("samu", "./asr")  # a folder called asr: ./asr or samu:asr


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("whisper:runs/x", ["unknown speech model kind 'whisper'", "'asr'", "'fused'", "samu:PATH"]),
        ("asr,w=0.3", ["bad option 'w=0.3'", "options of asr: lang=..."]),
        ("fused,beam=5:x", ["bad option 'beam=5'", "w=..., lang=..."]),
        ("fused,w=1.5", ["w='1.5'", "from 0 to 1"]),
        ("fused,w=half", ["w='half'", "from 0 to 1"]),
        ("fused,w=", ["bad option 'w='"]),
        ("samu:", ["needs a model folder"]),
        ("  ", ["empty speech model string", "'asr'"]),
    ],
)
def test_spec_errors_name_the_accepted_forms(text: str, words: list[str]) -> None:
    with pytest.raises(SpeechSpecError) as err:
        parse_speech_spec(text)
    for word in words:
        assert word in str(err.value)


def test_load_speech_encoder_refuses_unknown_kinds_before_loading_anything() -> None:
    from miner.encoders.samu import load_speech_encoder

    with pytest.raises(SpeechSpecError, match="accepted forms"):
        load_speech_encoder("wav2vec:somewhere", device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist and is not a hub id.*'asr'"):
        load_speech_encoder("asr2", device="cpu")  # a typo of a kind, and no such folder


def test_paired_text_names_and_spaces_of_every_kind(tmp_path: Path) -> None:
    assert paired_text_name(None) == "paired:"
    assert paired_text_name("asr") == "paired:"
    assert paired_text_name("fused,w=0.2:runs/x") == "paired:runs/x"
    assert paired_text_name("runs/x") == "paired:runs/x"
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"space_id": "s-8", "dim": 8}))
    for kind in (str(folder), f"samu:{folder}", f"asr:{folder}", f"fused,w=0.1:{folder}"):
        assert spec_space(kind) == ("s-8", 8)
    assert spec_space(None) is None and spec_space("org/hub-model") is None


# -- fusion maths ---------------------------------------------------------------------------------------------
def test_fuse_endpoints_and_midpoint() -> None:
    s = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)
    a = np.array([[0.0, 1.0], [0.6, 0.8]], np.float32)
    np.testing.assert_allclose(fuse(s, a, 1.0), s)
    np.testing.assert_allclose(fuse(s, a, 0.0), a)
    h = np.sqrt(0.5)
    np.testing.assert_allclose(fuse(s, a, 0.5), [[h, h], [0.6, 0.8]], rtol=1e-6)
    assert fuse(s, a, 0.3).dtype == np.float32
    with pytest.raises(ValueError, match="from 0"):
        fuse(s, a, 1.2)
    with pytest.raises(ValueError, match="one shape"):
        fuse(s, a[:1], 0.5)


# Two targets t0 = (1, 0), t1 = (0, 1). Clip 0 (gold t0): SAMU is wrong (0.6, 0.8), ASR right (1, 0); fused
# it is right while 1 - 0.4w > 0.8w, i.e. w < 0.833. Clip 1 (gold t1): SAMU right (0, 1), ASR wrong
# (0.8, -0.6); fused (0.8(1-w), w - 0.6(1-w)) is right when w > 0.583. Both right: w in {0.6, 0.7, 0.8}.
TARGETS = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
SAMU = np.array([[0.6, 0.8], [0.0, 1.0]], np.float32)
ASR = np.array([[1.0, 0.0], [0.8, -0.6]], np.float32)
GOLD = [0, 1]


def test_weight_chooser_on_a_hand_made_dev_set() -> None:
    choice = choose_fusion_weight(SAMU, ASR, TARGETS, GOLD)
    assert choice.weight == 0.6 and choice.r1 == 1.0  # 0.6, 0.7, 0.8 tie: the one closest to 0.5
    assert list(choice.r1_by_weight) == list(FUSION_GRID) == [i / 10 for i in range(11)]
    expected = {0.0: 0.5, 0.5: 0.5, 0.6: 1.0, 0.7: 1.0, 0.8: 1.0, 0.9: 0.5, 1.0: 0.5}
    assert {w: choice.r1_by_weight[w] for w in expected} == expected
    assert choice.to_dict()["r1_by_weight"]["0.6"] == 1.0


def test_weight_chooser_ties_go_closest_to_half_then_to_samu() -> None:
    same = np.array([[1.0, 0.0]], np.float32)  # both sides agree: every weight scores 1.0
    assert choose_fusion_weight(same, same, TARGETS, [0]).weight == 0.5
    assert choose_fusion_weight(same, same, TARGETS, [0], grid=(0.4, 0.6, 0.9)).weight == 0.6
    assert choose_fusion_weight(same, same, TARGETS, [0], grid=(0.0, 0.2)).weight == 0.2
    # rows need not be unit length: they are normalised first
    assert choose_fusion_weight(5 * SAMU, 0.1 * ASR, 3 * TARGETS, GOLD).weight == 0.6


def test_weight_chooser_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="gold rows must lie in 0..1"):
        choose_fusion_weight(SAMU, ASR, TARGETS, [0, 2])
    with pytest.raises(ValueError, match="one per clip"):
        choose_fusion_weight(SAMU, ASR, TARGETS, [0])
    with pytest.raises(ValueError, match=r"must both be \(n, dim\)"):
        choose_fusion_weight(SAMU, ASR[:1], TARGETS, GOLD)
    with pytest.raises(ValueError, match="targets"):
        choose_fusion_weight(SAMU, ASR, np.ones((2, 3), np.float32), GOLD)
    with pytest.raises(ValueError, match="empty"):
        choose_fusion_weight(SAMU, ASR, TARGETS, GOLD, grid=())
    with pytest.raises(ValueError, match="from 0"):
        choose_fusion_weight(SAMU, ASR, TARGETS, GOLD, grid=(0.5, 2.0))
