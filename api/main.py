"""``create_app(settings)``: the search service as a FastAPI app; models and databases load in its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.errors import install_error_handlers
from api.limits import BodyLimitMiddleware
from api.metrics import Metrics, MetricsMiddleware
from api.routes import admin, audio, embed, health, metrics, search, web
from api.settings import Settings
from api.state import ServiceState

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Nothing heavy happens here: models and indexes load when the lifespan starts.

    Args:
        settings: the configuration (default: ``Settings()`` from ``MINER_*`` environment variables).

    Returns:
        A FastAPI app; ``app.state.service`` is its :class:`~api.state.ServiceState`, ``app.state.metrics``
        its Prometheus collectors (a registry of its own).
    """
    settings = settings if settings is not None else Settings()
    app_metrics = Metrics(database_names=settings.metrics_database_names)
    state = ServiceState(settings, app_metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    from miner import __version__

    app = FastAPI(
        title="samu-miner search",
        version=__version__,
        description="Search sentences and utterances by speech or text in one SAMU-XLSR / LaBSE-style space.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = state
    app.state.metrics = app_metrics
    install_error_handlers(app)
    for module in (health, metrics, admin, search, embed, audio, web):
        app.include_router(module.router)
    # added last = outermost: metrics see every answer, the body limit runs before any route reads a byte
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=app_metrics)
    return app
