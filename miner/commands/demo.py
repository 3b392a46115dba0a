"""`miner demo`: mine the shipped clips against the shipped English corpus, offline."""

from __future__ import annotations

from pathlib import Path

import typer


def demo_command(
    home: Path | None = typer.Option(None, help="Data root (default $MINER_HOME or ./data)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default <home>/demo-out)."),
    model: str | None = typer.Option(None, help="Speech model folder (default: the shipped demo model)."),
    threshold: float | None = typer.Option(
        None, help="Margin threshold (default: calibrated on the dev split)."
    ),
) -> None:
    """Run the whole job offline: build the demo database, mine the demo clips, print pairs with precision/recall."""
    from miner.demo import run_demo

    run_demo(home=home, out_dir=out, model=model, threshold=threshold, echo=typer.echo)
