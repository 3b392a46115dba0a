"""`miner`: one command line, one subcommand per pipeline stage. Heavy imports happen inside the commands."""

from __future__ import annotations

import logging
import os
import sys

import typer

from miner import __version__
from miner.commands.demo import demo_command
from miner.commands.embed import embed_app
from miner.commands.evaluate import eval_app
from miner.commands.index import index_app
from miner.commands.mine import export_command, mine_command
from miner.commands.search import search_command
from miner.commands.serve import serve
from miner.commands.train import merge_command, train_command

app = typer.Typer(
    name="miner",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Speech-translation bitext mining with SAMU-XLSR: embed, index, search, mine, train, evaluate, serve.",
)
app.add_typer(embed_app, name="embed")
app.add_typer(eval_app, name="eval")
app.add_typer(index_app, name="index")
app.command("search")(search_command)
app.command("mine")(mine_command)
app.command("export")(export_command)
app.command("demo")(demo_command)
app.command("serve")(serve)
app.command("train")(train_command)
app.command("merge")(merge_command)


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # rebind to the current stderr on every invocation (tests invoke the app many times)
    )
    # Third-party chatter: faiss prints its CPU-feature probing at INFO (and sets its own level).
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_third_party)


_NOISY = ("faiss", "httpx", "urllib3", "ray")


def _quiet_third_party(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.name.startswith(_NOISY)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Console entry point: domain errors become one clear line and exit code 2, never a stack trace."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from miner.errors import USER_ERRORS

    try:
        app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except USER_ERRORS as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        # Usage errors (bad option, missing file) from Typer's click layer: show the usage line, not a trace.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        raise
