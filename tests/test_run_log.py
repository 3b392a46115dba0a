"""miner.train.run_log: the training run's log file, metrics lines and log window."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from miner.train.run_log import LogWindow, MetricsFile, log_to_file


def test_log_to_file_copies_package_records_and_restores_the_level(tmp_path: Path) -> None:
    pkg = logging.getLogger("miner")
    before = pkg.level
    pkg.setLevel(logging.WARNING)
    handlers = list(pkg.handlers)
    path = tmp_path / "run" / "train.log"
    with log_to_file(path):
        logging.getLogger("miner.train.loop").info("step %d loss %.3f", 7, 0.25)
        logging.getLogger("elsewhere").warning("not the package's")
    logging.getLogger("miner.train.loop").info("after the block")
    text = path.read_text(encoding="utf-8")
    assert "step 7 loss 0.250" in text
    assert "not the package's" not in text and "after the block" not in text
    assert pkg.level == logging.WARNING and pkg.handlers == handlers
    pkg.setLevel(before)


def test_log_to_file_none_writes_nothing(tmp_path: Path) -> None:
    handlers = list(logging.getLogger("miner").handlers)
    with log_to_file(None):
        assert logging.getLogger("miner").handlers == handlers
    assert list(tmp_path.iterdir()) == []


def test_metrics_file_appends_one_json_object_per_line_on_the_main_process_only(tmp_path: Path) -> None:
    main, other = (
        MetricsFile(tmp_path / "m.jsonl", enabled=True),
        MetricsFile(tmp_path / "o.jsonl", enabled=False),
    )
    for rec in ({"step": 1, "loss": 0.5}, {"step": 2, "dev_loss": 0.4}):
        main.write(rec)
        other.write(rec)
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"step": 1, "loss": 0.5}, {"step": 2, "dev_loss": 0.4}]
    assert not (tmp_path / "o.jsonl").exists()


def test_log_window_means_per_update_over_all_processes() -> None:
    w = LogWindow()
    w.add({"loss": 0.6, "cos_loss": 0.2, "utts": 10.0})
    w.add({"loss": 0.4, "cos_loss": 0.1, "utts": 6.0})
    assert w.sums() == pytest.approx([1.0, 0.3, 2.0, 16.0])
    other_process = [0.5, 0.3, 2.0, 4.0]
    totals = [a + b for a, b in zip(w.sums(), other_process, strict=True)]
    rec = w.record(totals, step=2, phase="head")
    assert rec["loss"] == pytest.approx(1.5 / 4) and rec["cos_loss"] == pytest.approx(0.6 / 4)
    assert rec["step"] == 2 and rec["phase"] == "head" and rec["utt_per_s"] > 0
    w.reset()
    assert w.sums() == [0.0, 0.0, 0.0, 0.0]
