"""Prometheus metrics of a service: its HTTP traffic, what it shed, and ``GET /metrics``.

prometheus-client, not hand-written text. Each app has its own registry (a process may run
several apps in tests); every service runs one worker process, so the client's multi-process
mode is not needed (a deployment that runs several workers per container would set
``PROMETHEUS_MULTIPROC_DIR`` and serve a ``MultiProcessCollector``; see the README).

Routes are labelled by their template (``/v1/workflows/{workflow_id}``), never by the raw path,
so a scan of random URLs cannot blow up the number of series.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metallica.threads import in_thread

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
UNMATCHED = "unmatched"


class ServiceMetrics:
    """The metrics every service has; a service adds its own to :attr:`registry`."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.service = service
        self.requests = Counter(
            "metallica_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "metallica_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "metallica_http_in_flight",
            "Requests being served now.",
            registry=self.registry,
        )
        self.shed = Counter(
            "metallica_shed",
            "Requests refused to protect the service, by reason: overloaded (requests in "
            "flight), deadline-passed, and protools' admission: client-rate, backlog-full, "
            "queue-timeout, codel.",
            ["reason"],
            registry=self.registry,
        )


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    """Counts and times every request (the metrics endpoint itself included)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app dies before it starts a response

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.metrics
        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            metrics.in_flight.dec()
            route = route_of(scope)
            metrics.requests.labels(route, scope["method"], str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the text exposition format. Collected in a thread: some collectors
    read the database (protools' outbox)."""
    metrics: ServiceMetrics = request.app.state.metrics
    body = await in_thread(generate_latest, metrics.registry)
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})
