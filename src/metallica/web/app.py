"""Building a service's Starlette app: routes, error table, token check, health endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from metallica.web.auth import require_token
from metallica.web.problems import exception_handlers

Endpoint = Callable[[Request], Awaitable[Response]]


def authenticated(token: str, endpoint: Endpoint) -> Endpoint:
    """``endpoint``, answering 401 problem+json to a request without the bearer token."""

    async def guarded(request: Request) -> Response:
        require_token(request, token)
        return await endpoint(request)

    guarded.__name__ = endpoint.__name__
    return guarded


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "service": request.app.state.service_name})


def service_app(
    name: str,
    routes: Sequence[BaseRoute],
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[Any]],
) -> Starlette:
    """A Starlette app with the shared health check and problem+json error table."""
    app = Starlette(
        routes=[Route("/healthz", healthz, methods=["GET"]), *routes],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.service_name = name
    return app
