"""`miner serve`: run the search service (api.create_app) with uvicorn.

Wire it into the CLI with ``app.command("serve")(serve)`` in ``miner/cli.py``; ``serve_command`` is the plain
function behind it (usable from Python and tests).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

log = logging.getLogger(__name__)

__all__ = ["serve", "serve_command"]


def serve_command(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    home: str | Path | None = None,
    speech_model: str | None = None,
    text_model: str | None = None,
    databases: list[str] | None = None,
    device: str | None = None,
    api_keys: list[str] | None = None,
    log_level: str = "info",
    **settings: object,
) -> None:
    """Serve the search API until interrupted.

    Settings not given here come from ``MINER_*`` environment variables (see :class:`api.settings.Settings`);
    arguments given here win. One process per GPU: scale out with more processes behind a load balancer, not
    with uvicorn workers (each worker would load its own copy of the models).

    Args:
        host: interface to bind (``0.0.0.0`` to accept outside connections, e.g. in a container).
        port: TCP port.
        home, speech_model, text_model, databases, device, api_keys: override the matching settings.
        log_level: uvicorn's log level.
        **settings: any other :class:`api.settings.Settings` field (e.g. ``max_k=50``).
    """
    import uvicorn

    from api.main import create_app
    from api.server import uvicorn_options
    from api.settings import Settings

    given: dict[str, Any] = {
        "home": home,
        "speech_model": speech_model,
        "text_model": text_model,
        "databases": databases or None,
        "device": device,
        "api_keys": api_keys or None,
        **settings,
    }
    cfg = Settings(**{k: v for k, v in given.items() if v is not None})
    app = create_app(cfg)
    auth = f"{len(cfg.api_keys)} API key(s)" if cfg.api_keys else "no authentication"
    log.info("serving on http://%s:%d (data root %s, %s)", host, port, cfg.home, auth)
    # one worker, no reload: the models load once in the app's lifespan; header timeout, connection limit and
    # keep-alive from the settings (api.server)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        workers=1,
        timeout_graceful_shutdown=30,
        **uvicorn_options(cfg),
    )


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 for all."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    home: Path | None = typer.Option(
        None, help="Data root with the databases (default $MINER_HOME or ./data)."
    ),
    speech_model: str | None = typer.Option(
        None, help="SAMU model folder (default $MINER_SPEECH_MODEL or demo)."
    ),
    text_model: str | None = typer.Option(None, help="Text encoder (default: the speech model's teacher)."),
    db: list[str] = typer.Option(
        [], "--db", help="Database to serve (repeat; default: all in the model's space)."
    ),
    device: str | None = typer.Option(None, help="torch device (default: CUDA when available)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve the HTTP search API (speech/text -> text/speech top-k, embeddings, /metrics)."""
    serve_command(
        host,
        port,
        home=home,
        speech_model=speech_model,
        text_model=text_model,
        databases=db,
        device=device,
        log_level=log_level,
    )
