"""What a training run writes as it goes: ``train.log`` (the package's log records) and ``metrics.jsonl``.

``metrics.jsonl`` holds one JSON object per line: a training window (``step``, ``loss``, ``cos_loss``, ``lr``,
``hours``, ``utt_per_s``, ``grad_norm``, ``phase``) every ``log_every`` updates, and a dev record (``step``,
``dev_loss``, ``dev_r1``, optionally ``dev_r1_en``) at every evaluation. Only the main process writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PACKAGE_LOGGER = "miner"


@contextlib.contextmanager
def log_to_file(path: Path | None) -> Iterator[None]:
    """Copy the ``miner`` package's INFO (and higher) records into ``path`` while the block runs.

    Args:
        path: the log file (appended to; its folder is created), or None to write nothing (non-main processes).
    """
    if path is None:
        yield
        return
    pkg_logger = logging.getLogger(PACKAGE_LOGGER)
    old_level = pkg_logger.level
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    pkg_logger.addHandler(handler)
    if pkg_logger.getEffectiveLevel() > logging.INFO:
        pkg_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        pkg_logger.removeHandler(handler)
        handler.close()
        pkg_logger.setLevel(old_level)


class MetricsFile:
    """Appends JSON records, one per line, to ``metrics.jsonl`` (only where ``enabled``: the main process)."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


class LogWindow:
    """This process's training statistics summed since the last log line, and when that line was written."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss = self.cos_loss = self.utts = 0.0
        self.updates = 0
        self.started = time.perf_counter()

    def add(self, stats: dict[str, float]) -> None:
        """Count one update's ``loss``, ``cos_loss`` (means over its micro-batches) and ``utts``."""
        self.loss += stats["loss"]
        self.cos_loss += stats["cos_loss"]
        self.utts += stats["utts"]
        self.updates += 1

    def sums(self) -> list[float]:
        """[loss, cos_loss, updates, utts]: the values to add up over processes before :meth:`record`."""
        return [self.loss, self.cos_loss, float(self.updates), self.utts]

    def record(self, totals: list[float], **fields: Any) -> dict[str, Any]:
        """The window's metrics line from ``totals`` (``sums()`` over all processes) plus ``fields``.

        ``loss`` and ``cos_loss`` are means per update; ``utt_per_s`` the utterances of all processes per second
        of wall time since the window started.
        """
        loss, cos_loss, updates, utts = totals
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        updates = max(updates, 1.0)
        return {**fields, "loss": loss / updates, "cos_loss": cos_loss / updates, "utt_per_s": utts / elapsed}
