"""The fusion's confidence gate: clips Whisper is sure of get their own weight (miner.encoders.fusion).

Hand-made data for the pure parts (per-clip weights, the chooser, ``top1_hits``); a tiny SAMU model and a fake
Whisper that reports a confidence per clip for the encoders, the transcript cache and the folder's recorded rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from miner.encoders.fusion import (
    ConfidenceGate,
    choose_fusion_gate,
    clip_weights,
    fuse,
    fusion_gate_of,
    save_fusion_weight,
)
from miner.encoders.transcript_cache import TranscriptCache
from miner.evaluate import evaluate_retrieval, top1_hits
from tests.test_speech_kinds import TEXTS, FakeTranscriber, tiny  # noqa: F401 (tiny: a fixture)


def test_clip_weights_follow_the_gate_and_ignore_unknown_confidences() -> None:
    gate = ConfidenceGate(threshold=-0.3, weight=0.2)
    conf = np.array([-0.1, -0.3, -0.9, np.nan])
    np.testing.assert_allclose(clip_weights(0.8, gate, conf, 4), [0.2, 0.2, 0.8, 0.8])
    np.testing.assert_allclose(clip_weights(0.8, None, conf, 4), [0.8] * 4)
    np.testing.assert_allclose(clip_weights(0.8, gate, None, 2), [0.8, 0.8])
    with pytest.raises(ValueError, match="3 confidences for 4 clips"):
        clip_weights(0.8, gate, conf[:3], 4)
    with pytest.raises(ValueError, match="log-probability"):
        ConfidenceGate(threshold=0.5, weight=0.2)
    with pytest.raises(ValueError, match="from 0"):
        ConfidenceGate(threshold=-0.5, weight=1.2)


def test_fuse_takes_one_weight_per_clip() -> None:
    rng = np.random.default_rng(0)
    s, a = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    per_clip = fuse(s, a, np.array([0.0, 0.5, 1.0]))
    for i, w in enumerate((0.0, 0.5, 1.0)):
        np.testing.assert_allclose(per_clip[i], fuse(s[i : i + 1], a[i : i + 1], w)[0], atol=1e-6)
    with pytest.raises(ValueError, match="per-clip weights"):
        fuse(s, a, np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="per-clip weights"):
        fuse(s, a, np.array([0.5, 1.5, 0.5]))


def test_chooser_finds_the_gate_when_sure_clips_want_the_cascade() -> None:
    # Six clips in two languages. Sure clips (0-2) are right only with much ASR (w <= 0.3); unsure ones (3-5)
    # only with much SAMU (w >= 0.7): no single weight gets more than half, the gate gets all.
    grid = [round(0.1 * i, 1) for i in range(11)]
    sure = np.array([True, True, True, False, False, False])
    hits = {w: np.where(sure, w <= 0.3, w >= 0.7) for w in grid}
    conf = np.where(sure, -0.1, -1.2)
    langs = ["de", "fr", "de", "fr", "de", "fr"]
    choice = choose_fusion_gate(hits, conf, langs, thresholds=(-0.2, -0.5))
    assert choice.r1 == 1.0 and choice.r1_plain == 0.5
    assert choice.gate is not None and choice.gate.weight <= 0.3 and choice.weight >= 0.7
    assert choice.share_confident == 0.5
    assert choice.to_dict()["gate"] == choice.gate.to_dict()


def test_chooser_keeps_one_weight_when_no_gate_beats_it() -> None:
    grid = [0.0, 0.5, 1.0]
    hits = {0.0: np.array([False, True]), 0.5: np.array([True, True]), 1.0: np.array([True, False])}
    choice = choose_fusion_gate(hits, np.array([-0.1, -2.0]), ["de", "de"])
    assert choice.gate is None and choice.weight == 0.5 and choice.r1 == choice.r1_plain == 1.0
    assert sorted(hits) == grid
    with pytest.raises(ValueError, match="one entry per clip"):
        choose_fusion_gate(hits, np.array([-0.1]), ["de", "de"])


def test_top1_hits_agree_with_evaluate_retrieval() -> None:
    db = np.eye(4, dtype=np.float32)
    texts = ["a", "b", "c", "b"]  # "b" twice: either copy is gold

    def search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = q @ db.T
        ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, ids, axis=1), ids

    queries = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0.6, 0.8, 0, 0], [0.7, 0.7, 0, 0]], np.float32)
    gold = ["a", "b", "a", "a"]  # the last one ties "a" with "b": a tie counts against gold
    hits = top1_hits(queries, search, lambda i: texts[i], gold)
    assert hits.tolist() == [True, True, False, False]
    r1 = evaluate_retrieval(queries, search, lambda i: texts[i], gold, ["x"] * 4, k=1)["avg"]["r1"]
    assert r1 == hits.mean()


def test_transcript_cache_keeps_scores_and_old_entries_have_none(tmp_path: Path) -> None:
    cache = TranscriptCache("k", root=tmp_path)
    waves = [np.zeros(400, np.float32), np.ones(400, np.float32)]
    cache.put_many(waves[:1], ["de"], ["hallo"])  # as written before scores were kept
    assert cache.get_many(waves, ["de", "de"]) == ["hallo", None]
    assert cache.get_many_scored(waves, ["de", "de"]) == [None, None]
    cache.put_many(waves, ["de", "de"], ["hallo", "welt"], [-0.25, -1.5])
    assert cache.get_many_scored(waves, ["de", "de"]) == [("hallo", -0.25), ("welt", -1.5)]
    assert cache.get_many_scored(waves, ["fr", "de"])[0] is None  # another language hint: another entry


class ScoredTranscriber(FakeTranscriber):
    """A fake Whisper that is sure of the first clip only."""

    def __init__(self, by_length: dict[int, str], sure_length: int) -> None:
        super().__init__(by_length)
        self.sure_length = sure_length

    def transcribe_scored(
        self, waves: Sequence[np.ndarray], langs: Sequence[str | None], batch_size: int = 8
    ) -> list[tuple[str, float]]:
        texts = self.transcribe(waves, langs, batch_size)
        return [(t, -0.05 if len(w) == self.sure_length else -1.4) for t, w in zip(texts, waves, strict=True)]


@pytest.fixture()
def scored_whisper(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import miner.asr

    sure = len(tiny["clips"][0])
    monkeypatch.setattr(
        miner.asr, "WhisperTranscriber", lambda *a, **k: ScoredTranscriber(tiny["by_length"], sure)
    )


def test_fused_encoder_applies_the_recorded_gate_per_clip(
    tiny: dict[str, Any],  # noqa: F811
    scored_whisper: None,
    tmp_path: Path,
) -> None:
    import shutil

    from miner.encoders.samu import load_speech_encoder

    folder = tmp_path / "samu"
    shutil.copytree(tiny["folder"], folder)
    clips = tiny["clips"]
    samu = load_speech_encoder(str(folder), device="cpu")
    asr: Any = load_speech_encoder(f"asr:{folder}", device="cpu")
    s, a = samu.encode(clips), asr.encode(clips)
    np.testing.assert_allclose(asr.last_confidence, [-0.05, -1.4, -1.4])

    save_fusion_weight(folder, 0.9, gate=ConfidenceGate(threshold=-0.3, weight=0.1))
    assert fusion_gate_of(folder) == ConfidenceGate(-0.3, 0.1)
    gated: Any = load_speech_encoder(f"fused:{folder}", device="cpu")
    vecs, heard = gated.encode_with_transcripts(clips)
    assert heard == TEXTS
    np.testing.assert_allclose(gated.last_weights, [0.1, 0.9, 0.9])
    np.testing.assert_allclose(vecs, fuse(s, a, np.array([0.1, 0.9, 0.9])), atol=1e-6)
    assert gated.model_id == f"fused:{folder.resolve()}"  # reloads the folder's rule, gate included

    # a weight in the string means that one weight for every clip
    fixed: Any = load_speech_encoder(f"fused,w=0.9:{folder}", device="cpu")
    np.testing.assert_allclose(fixed.encode(clips), fuse(s, a, 0.9), atol=1e-6)
    assert fixed.gate is None and fixed.fingerprint != gated.fingerprint

    # saving a plain weight removes the gate
    save_fusion_weight(folder, 0.9)
    assert fusion_gate_of(folder) is None


def test_a_malformed_recorded_gate_names_the_file_and_the_fix(tiny: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    import json
    import shutil

    folder = tmp_path / "samu"
    shutil.copytree(tiny["folder"], folder)
    cfg = folder / "config.json"
    data = json.loads(cfg.read_text())
    data.setdefault("extra", {})["fusion_gate"] = {"threshold": -0.3}
    cfg.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"config.json: extra.fusion_gate=.*fusion-weight --save"):
        fusion_gate_of(folder)


def test_cli_fusion_weight_chooses_on_several_dev_sets_and_records_the_rule(
    tiny: dict[str, Any],  # noqa: F811
    scored_whisper: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json
    import shutil

    import soundfile as sf
    from typer.testing import CliRunner

    from miner.cli import app

    monkeypatch.setenv("MINER_HOME", str(tmp_path / "home"))
    folder = tmp_path / "samu"
    shutil.copytree(tiny["folder"], folder)
    (tmp_path / "db.txt").write_text("\n".join([*TEXTS, "a distractor sentence"]) + "\n", encoding="utf-8")
    manifests = []
    for name, rows in (("a", [(0, "en"), (1, "de")]), ("b", [(2, "fr")])):
        lines = ["id\taudio\tlang\ttext\ttranslation"]
        for i, lang in rows:
            sf.write(tmp_path / f"c{i}.wav", tiny["clips"][i], 16000)
            lines.append(f"c{i}\tc{i}.wav\t{lang}\t{TEXTS[i]}\t{TEXTS[i]}")
        manifests.append(tmp_path / f"{name}.tsv")
        manifests[-1].write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = str(tmp_path / "db.txt")
    report = tmp_path / "fw.json"
    args = ["eval", "fusion-weight", "-q", str(manifests[0]), "--db", db, "-q", str(manifests[1]), "--db", db]
    result = CliRunner().invoke(app, [*args, "--model", str(folder), "--save", "--json", str(report)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "dev R@1 by weight" in result.stdout and "chosen: w = " in result.stdout
    data = json.loads(report.read_text())
    assert data["n"] == 3 and len(data["queries"]) == 2
    assert data["r1_by_weight"]["0"] == 1.0  # the fake Whisper hears every clip right: the cascade finds all
    choice = data["gate_choice"]
    assert 0.0 <= choice["share_confident"] <= 1.0 and choice["r1"] >= choice["r1_plain"]
    config = json.loads((folder / "config.json").read_text())["extra"]
    assert config["fusion_weight"] == data["weight"]
    assert config.get("fusion_gate") == choice["gate"]
    bad = CliRunner().invoke(app, ["eval", "fusion-weight", "-q", str(manifests[0]), "--model", str(folder)])
    assert bad.exit_code != 0  # --db is required
    bad = CliRunner().invoke(app, [*args[:-2], "--model", str(folder)])
    assert bad.exit_code != 0 and "one database per query set" in str(bad.output) + repr(bad.exception)


def test_chooser_counts_every_dev_set_alike() -> None:
    # Set 0 has three languages, set 1 one: per language, set 0 would outvote set 1 three to one; per set,
    # set 1 (all right at w = 0) weighs as much as set 0 (all right at w = 1).
    hits = {0.0: np.array([False, False, False, True]), 1.0: np.array([True, True, True, False])}
    conf = np.full(4, np.nan)
    langs = ["de", "fr", "it", "en"]
    by_lang = choose_fusion_gate(hits, conf, langs, thresholds=())
    by_set = choose_fusion_gate(hits, conf, langs, thresholds=(), sets=[0, 0, 0, 1])
    assert by_lang.r1_plain == 0.75 and by_lang.weight == 1.0
    assert by_set.r1_plain == 0.5
