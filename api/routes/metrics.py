"""``GET /metrics``: Prometheus text format from the app's own registry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import MetricsDep, SettingsDep
from api.security import check_api_key

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def metrics(
    metrics: MetricsDep,
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Request counts and latency per route, batch sizes, queue depth, model and search time (behind the API
    key when ``MINER_METRICS_REQUIRE_KEY`` is set)."""
    if settings.metrics_require_key:
        check_api_key(settings.api_keys, x_api_key, authorization)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
