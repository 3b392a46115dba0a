"""``GET /metrics``: Prometheus text format from the app's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import MetricsDep

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    """Request counts and latency per route, batch sizes, queue depth, model and search time."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
