"""A service's own protection: bounded requests in flight, bounded headers, and the caller's
deadline.

Beyond ``max_in_flight`` requests being served, a new one is refused at once with 503
``overloaded`` and ``Retry-After``, before its body is read: a refusal costs microseconds, where
queueing it would make every request behind it late too. Health, readiness and metrics are
never refused (an orchestrator must see a busy service as alive, and an operator must see why
it is busy). The caller's deadline header (:mod:`metallica.deadlines`) becomes the request's
deadline here, on arrival.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from metallica import deadlines
from metallica.errors import HeadersTooLarge, Overloaded
from metallica.problems import from_error
from metallica.web.metrics import ServiceMetrics
from metallica.web.problems import problem_response

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_HEADER_BYTES = 16 * 1024  # names and values together: a bearer token and a key fit many times
SHED_RETRY_AFTER = 1


class FlowControlMiddleware:
    def __init__(self, app: ASGIApp, *, max_in_flight: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.metrics = metrics
        self._deadline_header = deadlines.DEADLINE_HEADER.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.metrics.shed.labels("overloaded").inc()
            refusal = Overloaded(
                f"more than {self.max_in_flight} requests in flight", retry_after=SHED_RETRY_AFTER
            )
            response = problem_response(
                from_error(refusal, instance=scope["path"]),
                {"Retry-After": str(SHED_RETRY_AFTER)},
            )
            await response(scope, receive, send)
            return
        if sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEADER_BYTES:
            too_large = HeadersTooLarge(f"the headers are larger than {MAX_HEADER_BYTES} bytes")
            await problem_response(from_error(too_large, instance=scope["path"]))(
                scope, receive, send
            )
            return
        header = next((v for k, v in scope["headers"] if k == self._deadline_header), None)
        token = deadlines.current_deadline.set(deadlines.parse(header))
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            deadlines.current_deadline.reset(token)
