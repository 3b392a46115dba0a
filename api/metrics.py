"""Prometheus metrics in a per-app registry (several apps in one process never clash).

Requests are counted and timed per route template (``/search/speech-to-text``, never the raw URL, so label
cardinality stays bounded); the batchers report batch sizes, model time and queue depth.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's collectors, registered in their own :class:`CollectorRegistry`.

    Args:
        database_names: label search times with each database's name; ``False`` labels them all ``"*"``
            (``/metrics`` then tells nothing of which databases a server holds).
    """

    def __init__(self, database_names: bool = True) -> None:
        self.database_names = database_names
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "miner_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "miner_http_request_seconds",
            "HTTP request latency, seconds.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "miner_batch_size",
            "Items per encoder forward pass.",
            ["encoder"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "miner_model_seconds",
            "Time of one encoder forward pass, seconds.",
            ["encoder"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "miner_queue_depth",
            "Items waiting for an encoder forward pass.",
            ["encoder"],
            registry=self.registry,
        )
        self.search_seconds = Histogram(
            "miner_search_seconds",
            "Index search time per query, seconds.",
            ["database"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.dropped = Gauge(
            "miner_items_dropped",
            "Items dropped before their forward pass because their client left or their deadline passed.",
            ["encoder"],
            registry=self.registry,
        )
        self.refused = Gauge(
            "miner_items_refused",
            "Items refused at once (503) because the encoder's queue or expected wait was over its limit.",
            ["encoder"],
            registry=self.registry,
        )
        self.ready = Gauge("miner_ready", "1 once models and databases are loaded.", registry=self.registry)

    def observe_search(self, database: str, seconds: float) -> None:
        """Record one index search (labelled ``"*"`` when database names are kept out of the metrics)."""
        self.search_seconds.labels(database if self.database_names else "*").observe(seconds)

    def batch_observer(self, encoder: str) -> Callable[[int, float], None]:
        """An ``on_batch`` callback for :class:`api.batching.MicroBatcher`."""
        sizes = self.batch_size.labels(encoder)
        seconds = self.model_seconds.labels(encoder)

        def observe(size: int, took: float) -> None:
            sizes.observe(size)
            seconds.observe(took)

        return observe

    def track_admission(self, encoder: str, batcher: Any) -> None:
        """Read a batcher's dropped and refused item counts at scrape time."""
        self.dropped.labels(encoder).set_function(lambda: float(batcher.dropped))
        self.refused.labels(encoder).set_function(lambda: float(batcher.refused))

    def track_depth(self, encoder: str, depth: Callable[[], int]) -> None:
        """Read the queue depth at scrape time."""
        self.queue_depth.labels(encoder).set_function(lambda: float(depth()))


class MetricsMiddleware:
    """Count and time every HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception escaping the app becomes a 500 further out

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
