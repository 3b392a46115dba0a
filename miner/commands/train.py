"""`miner train CONFIG [key=value ...]`: distil a SAMU speech encoder from a frozen text encoder.

Multi-GPU: ``torchrun --nproc_per_node N -m miner train CONFIG`` (DDP; each process takes every N-th batch).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from miner.train.config import TrainConfig

log = logging.getLogger(__name__)


def train_command(
    config: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        help="TOML file of training settings (flat keys; see miner.train.config).",
    ),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. max_updates=500."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Run folder (overrides out_dir)."),
    max_updates: int | None = typer.Option(None, "--max-updates", min=1, help="Overrides max_updates."),
    seed: int | None = typer.Option(None, "--seed", help="Overrides seed."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the config and manifests, print the data plan, train nothing."
    ),
) -> None:
    """Train (or resume, from the newest checkpoint in out_dir) and write out_dir/final with a MODEL_CARD.md."""
    from miner.train.config import load_config

    typed = {
        k: v for k, v in (("out_dir", out_dir), ("max_updates", max_updates), ("seed", seed)) if v is not None
    }
    cfg = load_config(config, list(overrides or []), typed)
    if dry_run:
        typer.echo(_plan(cfg))
        return
    from miner.train.loop import train

    final = train(cfg)
    typer.echo(f"final model: {final}")


def _plan(cfg: TrainConfig) -> str:
    """What the run would train on: utterances, hours and sampling probability per language."""
    from collections import Counter

    from miner.train.data import read_manifest
    from miner.train.sampling import language_probs

    assert cfg.train_manifest is not None  # validated
    utts = read_manifest(cfg.train_manifest)
    counts = Counter(u.lang for u in utts)
    hours: dict[str, float] = {}
    for u in utts:
        hours[u.lang] = hours.get(u.lang, 0.0) + u.duration / 3600
    q = language_probs(dict(sorted(counts.items())), cfg.alpha)
    total = sum(hours.values())
    lines = [
        f"train manifest {cfg.train_manifest}: {len(utts)} utterances, {total:.2f} h",
        "lang\tutterances\thours\tsampling prob.",
    ]
    lines += [f"{lang}\t{counts[lang]}\t{hours[lang]:.2f}\t{q[lang]:.4f}" for lang in sorted(counts)]
    if cfg.dev_manifest:
        lines.append(f"dev manifest {cfg.dev_manifest}: {len(read_manifest(cfg.dev_manifest))} utterances")
    return "\n".join(lines)


def merge_command(
    old: Path = typer.Argument(..., help="SAMU model folder: the model fine-tuned from (weight 0)."),
    new: Path = typer.Argument(..., help="SAMU model folder: its fine-tune on another domain (weight 1)."),
    weight: float = typer.Option(
        0.5, "--weight", "-w", min=0.0, max=1.0, help="Share of NEW: head = (1-w)*OLD + w*NEW."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the merged model (head only)."),
) -> None:
    """Merge two SAMU heads on one frozen backbone by interpolating their weights (WiSE-FT): a fine-tune that
    learned a new domain and its starting model, blended to keep much of both. Choose the weight on dev data of
    both domains (`miner eval retrieval` per weight); calibrations (mine threshold, fusion weight) are dropped:
    run them again on the merged model."""
    from miner.train.merge import merge_model_folders

    for folder in (old, new):
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a SAMU model folder (no config.json)")
    merged = merge_model_folders(old, new, weight, out)
    typer.echo(f"merged model: {merged}")
