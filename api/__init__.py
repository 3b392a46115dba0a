"""The HTTP search service: a thin FastAPI edge over ``miner`` (encoders) and ``index`` (databases).

``create_app(Settings(...))`` builds the app; ``miner serve`` runs it with uvicorn.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:  # lazy: `import api.settings` must not import FastAPI routes
    if name == "create_app":
        from api.main import create_app

        return create_app
    if name == "Settings":
        from api.settings import Settings

        return Settings
    raise AttributeError(name)
