"""Building a service's Starlette app: routes, error table, token check, health endpoint."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metallica.faults import ATTEMPT_HEADER, InjectedDrop, current_attempt
from metallica.storage import Database, StorageBusy, StorageUnavailable, Timeouts, open_database
from metallica.storage.migrate import check_at_start, verify
from metallica.threads import in_thread, within
from metallica.web.access import TraceMiddleware
from metallica.web.auth import DEFAULT_NAME, Credentials, require_caller
from metallica.web.metrics import MetricsMiddleware, ServiceMetrics, metrics_endpoint
from metallica.web.openapi import Document
from metallica.web.overload import FlowControlMiddleware
from metallica.web.problems import exception_handlers

Endpoint = Callable[[Request], Awaitable[Response]]
logger = logging.getLogger("metallica.web")


def authenticated(credentials: Credentials | str, endpoint: Endpoint) -> Endpoint:
    """``endpoint``, answering 401 problem+json to a request without one of ``credentials``'
    bearer tokens (a lone token stands for the caller named ``default``); the endpoint finds
    the caller's name on ``request.state.caller``."""
    if isinstance(credentials, str):
        credentials = Credentials.of([(DEFAULT_NAME, credentials)])
    allowed = credentials

    async def guarded(request: Request) -> Response:
        require_caller(request, allowed)
        return await endpoint(request)

    guarded.__name__ = endpoint.__name__
    return guarded


def method_not_allowed(*allowed: str) -> Endpoint:
    """An endpoint answering 405 (``Allow: <allowed>``): for a fixed path that a templated
    route's methods would otherwise take (``GET /v1/workflows/password-creation`` is not a
    read of the workflow whose id is ``password-creation``)."""

    async def refuse(request: Request) -> Response:
        raise HTTPException(405, headers={"Allow": ", ".join(allowed)})

    return refuse


async def healthz(request: Request) -> Response:
    """Liveness: the process answers, and says which process it is (a supervisor checks that
    the process it started is the one answering on its port). Readiness is ``/readyz``."""
    return JSONResponse(
        {"status": "ok", "service": request.app.state.service_name, "pid": os.getpid()}
    )


# A readiness check answers {"ok": bool, ...}; one that takes longer than this is not ready.
READINESS_TIMEOUT = 2.0
ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]


def database_check(database: Database) -> ReadinessCheck:
    """Ready when the database answers and its schema is this code's (migrations applied)."""

    async def check() -> dict[str, Any]:
        await in_thread(verify, database)
        return {"ok": True}

    return check


class DescribesHealth(Protocol):
    def describe(self) -> dict[str, Any]:
        """``{"ok": bool, ...}``: how a background task fares."""


def health_check(health: DescribesHealth) -> ReadinessCheck:
    """Ready when a background task says it is (the relay's loops: running, last round ok)."""

    async def check() -> dict[str, Any]:
        return health.describe()

    return check


async def run_readiness_checks(
    state: Any, *, without: Collection[str] = ()
) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Whether every readiness check of the app whose ``state`` this is passes (but those named
    in ``without``), and each one's result (a failing check is the answer, not an error)."""
    checks: dict[str, ReadinessCheck] = getattr(state, "readiness_checks", {})
    results: dict[str, dict[str, Any]] = {}
    for name, check in checks.items():
        if name in without:
            continue
        try:
            results[name] = await within(READINESS_TIMEOUT, check())
        except Exception as error:
            results[name] = {"ok": False, "error": getattr(error, "code", type(error).__name__)}
    return bool(results) and all(result.get("ok") for result in results.values()), results


async def readyz(request: Request) -> Response:
    """Readiness: 200 when every check of the service passes, else 503 naming the failing ones."""
    ready, results = await run_readiness_checks(request.app.state)
    body = {
        "status": "ready" if ready else "not-ready",
        "service": request.app.state.service_name,
        "checks": results,
    }
    return JSONResponse(body, 200 if ready else 503, headers={"Cache-Control": "no-store"})


MAX_ATTEMPT_DIGITS = 9


class FaultContextMiddleware:
    """Tells fault points which attempt a request is, and carries out ``drop`` faults.

    A drop starts a response it never finishes: the server then closes the connection, and the
    caller sees it break without an answer. It sits inside Starlette's error middleware, which
    would otherwise turn the exception into a 500.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._header = ATTEMPT_HEADER.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        attempt = next((value for name, value in scope["headers"] if name == self._header), b"")
        # Anything but a plausible attempt number is ignored (int() refuses 4,300+ digits).
        valid = attempt.isdigit() and len(attempt) <= MAX_ATTEMPT_DIGITS
        token = current_attempt.set(int(attempt) if valid else None)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except InjectedDrop:
            if not started:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-length", b"64")],
                    }
                )
            raise  # the response cannot complete: the server closes the connection
        finally:
            current_attempt.reset(token)


# How long a starting service waits for its database (a container started before PostgreSQL).
DATABASE_STARTUP_WAIT = 60.0
DATABASE_TRY_SECONDS = 5.0  # one try's share of it: a line in the log at least this often


def open_migrated(
    url: str,
    schema: str,
    *,
    timeouts: Timeouts | None = None,
    pool_size: int = 16,
    wait: float = DATABASE_STARTUP_WAIT,
    migrate_at_start: bool = True,
) -> Database:
    """Open a service's database and check its schema (:func:`check_at_start`: migrated now
    when ``migrate_at_start``, else refused unless already at this code's version), waiting up
    to ``wait`` seconds in all for it to answer: each try is given what is left of ``wait``, so
    the service gives up on time.

    A database that is busy is waited for too: replicas started together open and migrate the
    same database at once, and one of them meets the other's lock (a migration holding the
    write lock past ``timeouts.lock``; on SQLite also the moments when a connection recovers
    or cleans up the WAL, when SQLite answers busy without waiting at all). Refusing to start
    for that left a replica of a two-replica stack dead at start in CI.

    Each failed try is logged (``database.waiting``, with the seconds waited so far, measured,
    and the cause), so an operator sees the service waiting rather than a silent hang; past
    ``wait`` the last error is raised, of its own kind, saying how long it waited. (stamina,
    used before, counts only its own sleeps, not the tries: its log said 5 s after a minute.)
    """
    started = time.monotonic()
    pause = 0.2
    while True:
        left = wait - (time.monotonic() - started)
        try:
            database = open_database(
                url,
                schema,
                pool_size=pool_size,
                timeouts=timeouts,
                open_timeout=max(0.5, min(left, DATABASE_TRY_SECONDS)),
            )
            try:
                check_at_start(database, migrate_at_start=migrate_at_start)
            except BaseException:
                database.close()
                raise
            return database
        except (StorageUnavailable, StorageBusy) as error:
            waited = time.monotonic() - started
            if waited + pause >= wait:
                raise type(error)(f"{error.detail} (gave up after {waited:.0f} s)") from None
            logger.warning(
                "database.waiting",
                extra={
                    "schema": schema,
                    "waited_s": round(waited, 1),
                    "gives_up_in_s": round(wait - waited, 1),
                    "cause": error.detail,
                },
            )
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


@asynccontextmanager
async def migrated_database(
    url: str,
    schema: str,
    timeouts: Timeouts | None = None,
    pool_size: int = 16,
    *,
    migrate_at_start: bool = True,
) -> AsyncIterator[Database]:
    """A service's database at this code's schema version, closed on the way out."""
    database = await in_thread(
        open_migrated,
        url,
        schema,
        timeouts=timeouts,
        pool_size=pool_size,
        migrate_at_start=migrate_at_start,
    )
    try:
        yield database
    finally:
        database.close()


class ServiceApp(Starlette):
    """A Starlette app whose outermost layer is :class:`TraceMiddleware`: outside Starlette's
    error middleware, so a 500's own log line carries the request's trace, and the access line
    sees the status the client got."""

    def build_middleware_stack(self) -> ASGIApp:
        return TraceMiddleware(super().build_middleware_stack())


def service_app(
    name: str,
    routes: Sequence[BaseRoute],
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[Any]],
    *,
    max_in_flight: int,
    metrics: ServiceMetrics | None = None,
    openapi: Document | None = None,
) -> Starlette:
    """A Starlette app with the shared health, readiness and metrics endpoints, ``openapi`` (the
    service's OpenAPI document, ``metallica/<service>/openapi.py``) at ``/openapi.json`` when
    given (the three services give theirs; the bench's floor and the fault proxy's control API
    have none), the problem+json error table, and the service's own protection
    (``max_in_flight`` requests at once). Every request is traced and logged
    (:mod:`metallica.web.access`)."""
    metrics = metrics or ServiceMetrics(name)
    shared = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    if openapi is not None:
        schema = JSONResponse(openapi).body  # no secret in it: no token needed

        async def serve_openapi(request: Request) -> Response:
            return Response(schema, media_type="application/json")

        shared.append(Route("/openapi.json", serve_openapi, methods=["GET"], name="openapi"))
    app = ServiceApp(
        routes=[*shared, *routes],
        exception_handlers=exception_handlers(),
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(FlowControlMiddleware, max_in_flight=max_in_flight, metrics=metrics),
            Middleware(FaultContextMiddleware),
        ],
        lifespan=lifespan,
    )
    app.state.service_name = name
    app.state.metrics = metrics
    return app
