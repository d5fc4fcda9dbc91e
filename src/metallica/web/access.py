"""Every request's trace, and its access line.

:class:`TraceMiddleware` wraps a whole app, Starlette's error handling included: it reads the
caller's ``traceparent`` (a new trace when it is missing or invalid), holds the trace in
:data:`metallica.tracing.current` while the request is served, so every line logged meanwhile
carries it (the 500 handler's too), answers with ``traceresponse``, and logs one
``metallica.access`` line once the request is over: method, route template, path (never the
query string, never a header or a body), status, duration, the authenticated caller, and what
the endpoint put on ``request.state.log_fields``. The health, readiness and metrics endpoints
log theirs at DEBUG (probes would drown the rest); the others at INFO. Nothing is built when
the level is off.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metallica import tracing

logger = logging.getLogger("metallica.access")

QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_PATH = 256  # characters of the path logged: a scan's junk URLs stay short
_TRACEPARENT = tracing.TRACEPARENT.encode()
_TRACERESPONSE = tracing.TRACERESPONSE.encode()


class TraceMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = next((value for name, value in scope["headers"] if name == _TRACEPARENT), None)
        trace = tracing.from_header(incoming)
        token = tracing.current.set(trace)
        status = 500  # what the server answers if nothing was sent
        aborted: str | None = None
        traceresponse = (_TRACERESPONSE, trace.header().encode())

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), traceresponse]}
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except BaseException as error:  # logged on the access line, then the server's to handle
            aborted = type(error).__name__
            raise
        finally:
            try:
                level = logging.DEBUG if scope["path"] in QUIET_PATHS else logging.INFO
                if logger.isEnabledFor(level):
                    logger.log(
                        level,
                        "metallica.access",
                        extra=_fields(scope, status, started, trace, aborted),
                    )
            finally:
                tracing.current.reset(token)


def _fields(
    scope: Scope,
    status: int,
    started: float,
    trace: tracing.TraceContext,
    aborted: str | None,
) -> dict[str, Any]:
    route = getattr(scope.get("route"), "path", None)
    fields: dict[str, Any] = {
        "method": scope["method"],
        "route": route if isinstance(route, str) else None,
        "path": scope["path"][:MAX_PATH],
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    if trace.parent_id is not None:
        fields["parent_id"] = trace.parent_id
    state = scope.get("state")
    if state:
        caller = state.get("caller")
        if caller is not None:
            fields["client"] = caller
        more = state.get("log_fields")
        if more:
            fields |= {key: value for key, value in more.items() if key not in fields}
    if aborted is not None:
        fields["aborted"] = aborted
    return fields
