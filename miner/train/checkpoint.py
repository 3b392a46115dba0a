"""Checkpoints that resume exactly: the model (safetensors via ``save_pretrained``) plus trainer state.

``out_dir/checkpoints/step_XXXXXX/`` holds the model folder files, ``rng_state_<rank>.pt`` (each process's
torch / CUDA / numpy / python RNG states) and ``trainer_state.pt`` (optimizer, scheduler, grad scaler,
sampler, step, counters, config), written last: a folder without it is incomplete and ignored. The ``.pt``
files hold tensors and plain Python types only and are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = [
    "STATE_FORMAT",
    "TRAINER_STATE",
    "capture_rng",
    "checkpoint_dir",
    "latest_checkpoint",
    "load_state",
    "load_trainer_state",
    "prune_checkpoints",
    "restore_rng",
    "rng_file",
    "save_state",
]

TRAINER_STATE = "trainer_state.pt"
STATE_FORMAT = 1  # version of the trainer_state.pt dict written by the trainer
_STEP_DIR = re.compile(r"^step_(\d{6,})$")


def checkpoint_dir(out_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:06d}"


def rng_file(folder: str | os.PathLike[str], rank: int) -> Path:
    """One process's RNG states inside a checkpoint folder."""
    return Path(folder) / f"rng_state_{rank}.pt"


def load_trainer_state(
    folder: str | os.PathLike[str], config_now: Mapping[str, Any], neutral: Collection[str], rank: int
) -> dict[str, Any]:
    """The trainer state of a checkpoint, after checking that it may be resumed; restores this process's RNGs.

    Args:
        folder: a complete checkpoint folder.
        config_now: the run's config as a dict (``TrainConfig.to_dict()``).
        neutral: config keys that may change between the saved run and this one (e.g. the update budget).
        rank: this process's rank (whose RNG file to restore).

    Raises:
        ValueError: a config key outside ``neutral`` changed; the message lists (saved, now) per key and the fix.
    """
    folder = Path(folder)
    state = load_state(folder / TRAINER_STATE)
    saved = state.get("config", {})
    diff = {k: (saved.get(k), v) for k, v in config_now.items() if k not in neutral and saved.get(k) != v}
    if diff:
        raise ValueError(
            f"cannot resume from {folder}: the config changed (saved, now): {diff}; restore those "
            f"values or train into a new out_dir"
        )
    rng = rng_file(folder, rank)
    if rng.is_file():
        restore_rng(load_state(rng))
    else:
        log.warning("%s missing (different number of processes?): random draws will differ", rng.name)
    return state


def _complete_checkpoints(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and (d / TRAINER_STATE).is_file() and (d / "config.json").is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = _complete_checkpoints(out_dir)
    return found[-1][1] if found else None


def prune_checkpoints(out_dir: str | os.PathLike[str], keep: int) -> None:
    """Delete all but the ``keep`` newest complete checkpoints."""
    for _, d in _complete_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(d, ignore_errors=True)
        log.debug("removed old checkpoint %s", d)


def save_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """torch.save through a temp file and rename (a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def capture_rng() -> dict[str, Any]:
    """Every RNG the training step draws from: dropout (torch), time masking (numpy), python."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x
