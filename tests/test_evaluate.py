"""Retrieval metrics on hand-computed cases, and the train -> eval CLI end to end on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from miner.evaluate import (
    calibrate_threshold,
    evaluate_retrieval,
    format_table,
    normalize_text,
    recall_at_k,
    retrieval_wer,
    xsim_error_rate,
)


# -- R@k -----------------------------------------------------------------------------------------------------
def test_recall_at_k_by_position() -> None:
    ranked = np.array([[3, 1, 2], [2, 3, 1], [1, 2, 3]])
    gold = np.array([1, 1, 1])
    assert [recall_at_k(ranked, gold, k) for k in (1, 2, 3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    # Gold sets (duplicates in the database) and -1 padding slots.
    ranked = np.array([[4, 9, -1], [-1, -1, -1]])
    assert recall_at_k(ranked, [{9, 5}, {7}], 2) == 0.5
    assert recall_at_k(ranked, [{9, 5}, {-1}], 3) == 0.5  # an empty slot is never a hit


def test_recall_at_k_ties_go_against_gold() -> None:
    ids = np.array([[5, 7, 3]])
    scores = np.array([[0.9, 0.8, 0.8]])
    assert recall_at_k(ids, [3], 2, scores) == 0.0  # tied with the 2nd (7): ranked after it
    assert recall_at_k(ids, [7], 2, scores) == 0.0  # listed 2nd, but tied with non-gold 3: still a miss
    assert recall_at_k(ids, [7], 2) == 1.0  # by position alone it would count
    assert recall_at_k(ids, [3], 3, scores) == 1.0
    assert recall_at_k(ids, [5], 1, scores) == 1.0
    assert recall_at_k(ids, [{7, 3}], 2, scores) == 1.0  # only non-gold rivals count (5)
    flat = np.array([[1, 2, 3]])
    assert recall_at_k(flat, [1], 1, np.full((1, 3), 0.5)) == 0.0  # all tied: no lucky hit
    with pytest.raises(ValueError, match="gold has 2 entries"):
        recall_at_k(ids, [1, 2], 1)


# -- WER -----------------------------------------------------------------------------------------------------
def test_wer_of_retrieved_text() -> None:
    assert retrieval_wer(["the dog sleeps"], ["The cat sleeps."]) == pytest.approx(1 / 3)
    # Corpus level: 1 substitution over 4 + 1 reference words.
    assert retrieval_wer(["a b c d", "x"], ["a b c d", "y"]) == pytest.approx(0.2)
    assert retrieval_wer(["The cat."], ["the cat"], normalize=False) == pytest.approx(1.0)
    assert normalize_text("  L'Été,  déjà! ") == "l été déjà"
    with pytest.raises(ValueError, match="empty"):
        retrieval_wer(["x"], ["?!"])


# -- xSIM ----------------------------------------------------------------------------------------------------
def _unit(a: list[list[float]]) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_xsim_margin_discounts_a_hub() -> None:
    x = _unit([[1, 0, 0.3], [0, 1, 0.3]])
    y = _unit([[0.6, 0.6, 1.0], [1, 0, -0.9], [0, 1, -0.9]])  # y0 is a hub: the nearest target of both
    # cos(x0, .) = (0.657, 0.520, -0.192); k = 2: r_x0 = 0.589, r_y0 = 0.657, r_y1 = 0.164
    # ratio: x0-y0 0.657 / 0.623 = 1.055 < x0-y1 0.520 / 0.376 = 1.382, so the margin picks the gold y1.
    assert xsim_error_rate(x, y, [1, 2], "absolute", k=2) == 1.0
    assert xsim_error_rate(x, y, [1, 2], "ratio", k=2) == 0.0
    assert xsim_error_rate(x, y, [1, 2], "distance", k=2) == 0.0
    assert xsim_error_rate(y, y) == 0.0 and xsim_error_rate(y, y, [1, 0, 2]) == pytest.approx(2 / 3)


# -- BUCC threshold --------------------------------------------------------------------------------------------
def test_calibrate_threshold_hand_cases() -> None:
    assert calibrate_threshold([0.6, 0.9, 0.7, 0.8], [0, 1, 0, 1]) == pytest.approx((0.75, 1.0, 1.0, 1.0))
    # Two gold pairs no candidate found: recall over 4; best cut still after 0.8 (F1 2/3).
    assert calibrate_threshold([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0], n_gold=4) == pytest.approx(
        (0.75, 2 / 3, 1.0, 0.5)
    )
    # No cut inside a tie: 0.8 / 0.8 stay together, the best cut keeps the first three (F1 0.8).
    assert calibrate_threshold([0.9, 0.8, 0.8, 0.1], [1, 1, 0, 0]) == pytest.approx((0.45, 0.8, 2 / 3, 1.0))
    t, f1, _, _ = calibrate_threshold([0.5, 0.4], [1, 1])  # keep everything: just below the lowest score
    assert f1 == 1.0 and t < 0.4 and t > 0.4 - 1e-9
    with pytest.raises(ValueError, match="no gold pair"):
        calibrate_threshold([0.5], [0])


# -- evaluate_retrieval / format_table ------------------------------------------------------------------------
def _numpy_search(db: np.ndarray):
    def search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = q @ db.T
        ids = np.argsort(-sims, axis=1, kind="stable")[:, : min(k, len(db))]
        return np.take_along_axis(sims, ids, axis=1), ids

    return search


def test_evaluate_retrieval_per_language() -> None:
    texts = ["the cat", "a dog", "the cat", "le chien"]
    db = np.eye(4, dtype=np.float32)
    q = _unit([[1, 0, 0.5, 0], [0, 0.5, 0, 1], [0, 1, 0, 0.2]]).astype(np.float32)
    res = evaluate_retrieval(
        q, _numpy_search(db), texts.__getitem__, ["The cat.", "a dog", "a dog"], ["en", "fr", "fr"], k=2
    )
    en, fr = res["by_lang"]["en"], res["by_lang"]["fr"]
    assert en == {"n": 1, "r1": 1.0, "r2": 1.0, "wer": 0.0}  # either duplicate of "the cat" counts
    assert fr["n"] == 2 and fr["r1"] == 0.5 and fr["r2"] == 1.0
    assert fr["wer"] == pytest.approx(2 / 4)  # "le chien" for "a dog": 2 substitutions over 4 gold words
    assert res["avg"] == pytest.approx({"n": 3, "r1": 0.75, "r2": 1.0, "wer": 0.25})
    table = format_table(res, topline=res)
    assert "| System | Metric | en | fr | Avg |" in table
    assert "| Topline (text) | R@1 | 100.0 | 50.0 | 75.0 |" in table
    assert "|  | R@2 | 100.0 | 100.0 | 100.0 |" in table and "|  | WER | 0.0 | 50.0 | 25.0 |" in table


def test_evaluate_retrieval_by_duration_bucket() -> None:
    texts = ["the cat", "a dog", "le chien"]
    db = np.eye(3, dtype=np.float32)
    # Query 0 finds its gold first, query 1 second, query 2 first.
    q = _unit([[1, 0.2, 0], [0.9, 0.5, 0], [0, 0, 1]]).astype(np.float32)
    gold = ["the cat", "a dog", "le chien"]
    res = evaluate_retrieval(q, _numpy_search(db), texts.__getitem__, gold, ["en", "en", "fr"], k=2,
                             durations=[3.0, 7.5, 24.0])  # fmt: skip
    assert res["by_duration"] == {
        "0-5s": {"n": 1, "r1": 1.0, "r2": 1.0},
        "5-10s": {"n": 1, "r1": 0.0, "r2": 1.0},
        "20s+": {"n": 1, "r1": 1.0, "r2": 1.0},
    }  # the empty 10-20 s bucket is left out
    assert "by_duration" not in evaluate_retrieval(q, _numpy_search(db), texts.__getitem__, gold, ["en"] * 3)
    with pytest.raises(ValueError, match="durations"):
        evaluate_retrieval(q, _numpy_search(db), texts.__getitem__, gold, ["en"] * 3, durations=[1.0])


# -- CLI end to end ------------------------------------------------------------------------------------------
def _app():
    import typer

    from miner.commands.evaluate import eval_app
    from miner.commands.train import train_command

    app = typer.Typer()
    app.command("train")(train_command)
    app.add_typer(eval_app, name="eval")
    return app


def test_cli_train_then_eval_retrieval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_whisper_dir: Path, spread_st_dir: Path
) -> None:
    from typer.testing import CliRunner

    from tests._train_fixtures import SENTENCES, write_tiny_corpus

    torch.set_num_threads(1)
    monkeypatch.setenv("MINER_HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    manifest = write_tiny_corpus(data)
    cfg = data / "run.toml"
    cfg.write_text(
        f'train_manifest = "train.tsv"\ndev_manifest = "train.tsv"\nbackbone = "{tiny_whisper_dir}"\n'
        f'teacher = "{spread_st_dir}"\nout_dir = "run"\nmax_updates = 6\nhead_only_updates = 3\n'
        "peak_lr = 0.003\nbatch_seconds = 2.0\nnum_workers = 0\nlog_every = 2\neval_every = 0\n"
    )
    runner = CliRunner()
    app = _app()
    plan = runner.invoke(app, ["train", str(cfg), "--dry-run"])
    assert plan.exit_code == 0, plan.output
    assert "16 utterances" in plan.output and "fr\t4\t" in plan.output
    result = runner.invoke(app, ["train", str(cfg), "save_every=3", "--seed", "1"])
    assert result.exit_code == 0, result.output
    final = data / "run" / "final"
    assert (final / "MODEL_CARD.md").is_file() and "final model" in result.output
    assert sorted(p.name for p in (data / "run" / "checkpoints").iterdir()) == ["step_000003", "step_000006"]

    corpus = tmp_path / "db.txt"
    distinct = sorted({t for texts in SENTENCES.values() for t in texts})
    corpus.write_text("\n".join([*distinct, "the sofa", "la maison sur le chien"]) + "\n")
    out = tmp_path / "eval.json"
    args = [
        "eval",
        "retrieval",
        "--queries",
        str(manifest),
        "--db",
        str(corpus),
        "--model",
        str(final),
        "--json",
        str(out),
        "--k",
        "5",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| System | Metric | de | en | fr | Avg |" in result.output
    report = json.loads(out.read_text())
    assert report["space_id"] == "st-spread-16" and report["k"] == 5
    for system in ("samu", "topline"):
        res = report[system]
        assert set(res["by_lang"]) == {"de", "en", "fr"}
        for entry in [*res["by_lang"].values(), res["avg"]]:
            assert set(entry) == {"n", "r1", "r5", "wer"}
            assert 0.0 <= entry["r1"] <= entry["r5"] <= 1.0 and entry["wer"] >= 0.0
        assert res["avg"]["n"] == 16
    # The topline searches with the teacher's own embedding of the gold transcript: always found first.
    assert report["topline"]["avg"]["r1"] == 1.0 and report["topline"]["avg"]["wer"] == 0.0
    assert len(list((tmp_path / "home" / "cache" / "corpus").glob("*.npy"))) == 1  # corpus embeddings cached

    # The same corpus as a database built under the data root gives the same numbers.
    from index.build import build_index
    from miner.encoders.samu import SpeechEncoder
    from miner.encoders.text import load_text_encoder_for

    lines = corpus.read_text().splitlines()
    text_side = load_text_encoder_for(SpeechEncoder.from_pretrained(final))
    build_index(
        tmp_path / "home" / "tiny-db",
        text_side.encode(lines),
        [{"text": t} for t in lines],
        space_id=text_side.space_id,
        tune_queries=0,
    )
    out2 = tmp_path / "eval-db.json"
    result = runner.invoke(app, [*args[:5], "tiny-db", *args[6:8], "--json", str(out2)])
    assert result.exit_code == 0, result.output
    by_name = json.loads(out2.read_text())
    assert by_name["samu"] == report["samu"] and by_name["topline"] == report["topline"]

    missing = runner.invoke(
        app, ["eval", "retrieval", "--queries", str(manifest), "--db", "nope", "--model", str(final)]
    )
    assert isinstance(missing.exception, FileNotFoundError) and "database 'nope' not found" in str(
        missing.exception
    )
    unknown = runner.invoke(app, [*args[:8], "--baseline", "mt"])
    assert unknown.exit_code == 2 and "unknown baseline" in unknown.output


def test_cli_calibrate(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    cands = tmp_path / "cands.tsv"
    cands.write_text("source_id\ttarget_id\tscore\na\tx\t0.9\nb\ty\t0.8\nc\tz\t0.7\nd\tw\t0.6\n")
    gold = tmp_path / "gold.tsv"
    gold.write_text("source_id\ttarget_id\na\tx\nb\ty\ne\tv\n")
    out = tmp_path / "t.json"
    result = CliRunner().invoke(
        _app(), ["eval", "calibrate", "--candidates", str(cands), "--gold", str(gold), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    got = json.loads(out.read_text())
    assert got["threshold"] == pytest.approx(0.75) and got["recall"] == pytest.approx(2 / 3)
    assert got["gold"] == 3 and "F1 80.00" in result.output


def test_cli_speech_to_speech_retrieval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_whisper_dir: Path, tiny_st_dir: Path
) -> None:
    """--db a speech manifest: each query clip, searched among the same clips, retrieves itself (R@1 = 1)."""
    import numpy as np
    from typer.testing import CliRunner

    from miner.encoders.samu import SpeechEncoder
    from tests._train_fixtures import write_tiny_corpus

    torch.set_num_threads(1)
    monkeypatch.setenv("MINER_HOME", str(tmp_path / "home"))
    manifest = write_tiny_corpus(tmp_path / "data")
    model = SpeechEncoder.from_backbone(
        str(tiny_whisper_dir), dim=16, space_id="st-model-16", teacher=str(tiny_st_dir)
    )
    folder = model.save_pretrained(tmp_path / "samu")
    from miner.train.data import load_utterance_audio, read_manifest

    emb = SpeechEncoder.from_pretrained(folder).encode(
        [load_utterance_audio(u) for u in read_manifest(manifest)]
    )
    assert len(np.unique(np.round(emb, 5), axis=0)) == len(emb)  # distinct clips, so self-retrieval is unique
    out = tmp_path / "s2s.json"
    result = CliRunner().invoke(
        _app(),
        [
            "eval",
            "retrieval",
            "--queries",
            str(manifest),
            "--db",
            str(manifest),
            "--model",
            str(folder),
            "--gold",
            "text",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["samu"]["avg"]["r1"] == 1.0 and report["samu"]["avg"]["n"] == 16
