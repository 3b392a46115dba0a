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
