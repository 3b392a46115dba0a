"""scripts/make_demo_manifests.py writes manifests that the readers get back unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from make_demo_manifests import read_tsv, write_tsv  # noqa: E402

from miner.train.data import read_manifest  # noqa: E402


def test_quotes_and_backslashes_round_trip(tmp_path: Path) -> None:
    rows = [
        {
            "id": "a",
            "audio": "a.wav",
            "lang": "de",
            "text": 'Klicken Sie auf "Speichern" \\ jetzt',
            "duration": "1.0",
        },
        {
            "id": "b",
            "audio": "b.wav",
            "lang": "fr",
            "text": "une\ttabulation\net une ligne",
            "duration": "2.0",
        },
    ]
    path = tmp_path / "m.tsv"
    write_tsv(path, rows, ["id", "audio", "lang", "text", "duration"])
    back = read_tsv(path)
    assert back[0]["text"] == 'Klicken Sie auf "Speichern" \\ jetzt'
    assert back[1]["text"] == "une tabulation et une ligne"
    assert '\\"' not in path.read_text(encoding="utf-8")
    (tmp_path / "a.wav").touch()
    (tmp_path / "b.wav").touch()
    utts = read_manifest(path)
    assert [u.text for u in utts] == [back[0]["text"], back[1]["text"]]


def test_eval_only_writes_the_same_evaluation_files_without_train_clips(tmp_path: Path, monkeypatch) -> None:
    """--eval-only (no train clips synthesized) must leave out of the databases exactly the train meanings that
    train.tsv would hold, so the rebuilt test sets equal the original ones."""
    import make_demo_manifests

    data = tmp_path / "data"
    data.mkdir()
    cols = ["id", "audio", "lang", "text", "translation", "meaning_id", "duration"]
    parallel, split_rows = [], {"train": [], "dev": [], "test": []}
    for i in range(40):
        split = "test" if i < 6 else "dev" if i < 12 else "train"
        mid = f"m{i:03d}"
        row = {"meaning_id": mid, "split": split, "en": f"English {i}.", "fr": f"Français {i}."}
        if i % 3:
            row["de"] = f"Deutsch {i}."
        parallel.append(row)
        for lang in ("en", "fr", "de"):
            if row.get(lang) and (lang != "en" or split != "train"):
                clip = data / f"{lang}_{mid}.flac"
                clip.touch()
                split_rows[split].append(
                    {"id": f"{lang}_{mid}", "audio": clip.name, "lang": lang, "text": row[lang],
                     "translation": row["en"], "meaning_id": mid, "duration": "1.0"}  # fmt: skip
                )
    write_tsv(data / "parallel.tsv", parallel, ["meaning_id", "split", "en", "fr", "de"])
    for split, rows in split_rows.items():
        write_tsv(data / f"{split}.tsv", rows, cols)

    def run(out: Path, *extra: str) -> None:
        args = ["make_demo_manifests.py", "--data", str(data), "--out", str(out), "--langs", "fr,de"]
        monkeypatch.setattr(sys, "argv", [*args, "--train-per-lang", "10", "--db-size", "20", *extra])
        make_demo_manifests.main()

    run(tmp_path / "full")
    (data / "train.tsv").unlink()  # as after `synthesize_speech.py --splits test,dev`
    run(tmp_path / "eval", "--eval-only")
    assert not (tmp_path / "eval" / "train.tsv").exists()
    for name in ("en_db.txt", "fr_db.txt", "queries_x_en.tsv", "queries_en_x.tsv", "dev.tsv", "en_speech_db.tsv"):
        assert (tmp_path / "eval" / name).read_text() == (tmp_path / "full" / name).read_text(), name
    # the databases hold 20 sentences, some of them distractors never in training
    assert len((tmp_path / "eval" / "en_db.txt").read_text().splitlines()) == 20
