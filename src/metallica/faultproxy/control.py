"""The control API: fault proxies as a process of their own, driven over HTTP like Toxiproxy.

=======  ================================  ==================================================
GET      /healthz                          ``{"status": "ok", "service": "faultproxy"}``
GET      /proxies                          ``{"proxies": [proxy, ...]}``
POST     /proxies                          ``{name, listen, upstream}`` → 201 proxy
GET      /proxies/{name}                   proxy
DELETE   /proxies/{name}                   204; the proxy stops, its connections close
GET      /proxies/{name}/toxics            ``{"toxics": [toxic, ...]}``
POST     /proxies/{name}/toxics            ``{type, name?, direction?, toxicity?,
                                           attributes?}`` → 201 toxic
DELETE   /proxies/{name}/toxics/{toxic}    204
DELETE   /proxies/{name}/toxics            204; every toxic off
=======  ================================  ==================================================

``listen`` and ``upstream`` are ``host:port`` (``[::1]:port`` for IPv6); listening on port 0
picks a free port, which the answer shows. Errors are RFC 9457 problem+json: 422 for an invalid
body or toxic, 404 for an unknown proxy or toxic, 409 for a taken name or an unusable port.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metallica.faultproxy.errors import InvalidProxy
from metallica.faultproxy.proxy import FaultProxy
from metallica.faultproxy.registry import ProxyRegistry, format_address, parse_address
from metallica.faultproxy.toxics import check_name, describe_toxic, parse_toxic
from metallica.web.app import service_app
from metallica.web.requests import json_object, string_field

SERVICE_NAME = "faultproxy"
_PROXY_FIELDS = ("name", "listen", "upstream")


def describe_proxy(proxy: FaultProxy) -> dict[str, Any]:
    """The JSON of a proxy: addresses, whether it is up, its toxics and counters."""
    stats = proxy.stats()
    return {
        "name": proxy.name,
        "listen": format_address(proxy.listen_host, proxy.port),
        "upstream": format_address(proxy.upstream_host, proxy.upstream_port),
        "enabled": not proxy.down,
        "toxics": [describe_toxic(toxic) for toxic in proxy.toxics()],
        "stats": {
            "connections_accepted": stats.connections_accepted,
            "connections_active": stats.connections_active,
            "bytes_upstream": stats.bytes_upstream,
            "bytes_downstream": stats.bytes_downstream,
        },
    }


class _Endpoints:
    """The handlers, around the registry of the app's proxies."""

    def __init__(self, registry: ProxyRegistry) -> None:
        self.registry = registry

    def _proxy(self, request: Request) -> FaultProxy:
        return self.registry.get(str(request.path_params["name"]))

    async def list_proxies(self, request: Request) -> Response:
        return JSONResponse({"proxies": [describe_proxy(p) for p in self.registry.all()]})

    async def create_proxy(self, request: Request) -> Response:
        body = await json_object(request)
        unknown = sorted(set(body) - set(_PROXY_FIELDS))
        if unknown:
            raise InvalidProxy(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
        name, listen, upstream = (str(string_field(body, field)) for field in _PROXY_FIELDS)
        proxy = await self.registry.create(name, listen, upstream)
        return JSONResponse(describe_proxy(proxy), status_code=201)

    async def get_proxy(self, request: Request) -> Response:
        return JSONResponse(describe_proxy(self._proxy(request)))

    async def delete_proxy(self, request: Request) -> Response:
        await self.registry.delete(str(request.path_params["name"]))
        return Response(status_code=204)

    async def list_toxics(self, request: Request) -> Response:
        toxics = self._proxy(request).toxics()
        return JSONResponse({"toxics": [describe_toxic(toxic) for toxic in toxics]})

    async def add_toxic(self, request: Request) -> Response:
        proxy = self._proxy(request)
        toxic = parse_toxic(await json_object(request))
        await proxy.add_toxic(toxic)
        return JSONResponse(describe_toxic(toxic), status_code=201)

    async def remove_toxic(self, request: Request) -> Response:
        await self._proxy(request).remove_toxic(str(request.path_params["toxic"]))
        return Response(status_code=204)

    async def clear_toxics(self, request: Request) -> Response:
        await self._proxy(request).clear()
        return Response(status_code=204)


def control_app(
    proxies: Sequence[tuple[str, str, str]] = (), *, registry: ProxyRegistry | None = None
) -> Starlette:
    """The control API, with ``proxies`` (name, listen, upstream) created at startup.

    Every proxy is stopped at shutdown. The proxies live on the app's event loop, so in tests
    use ``with TestClient(app)``: without ``with`` each request runs on a loop of its own.
    """
    registry = registry or ProxyRegistry()
    endpoints = _Endpoints(registry)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            for name, listen, upstream in proxies:
                await registry.create(name, listen, upstream)
            yield
        finally:
            await registry.close()

    routes = [
        Route("/proxies", endpoints.list_proxies, methods=["GET"]),
        Route("/proxies", endpoints.create_proxy, methods=["POST"]),
        Route("/proxies/{name}", endpoints.get_proxy, methods=["GET"]),
        Route("/proxies/{name}", endpoints.delete_proxy, methods=["DELETE"]),
        Route("/proxies/{name}/toxics", endpoints.list_toxics, methods=["GET"]),
        Route("/proxies/{name}/toxics", endpoints.add_toxic, methods=["POST"]),
        Route("/proxies/{name}/toxics", endpoints.clear_toxics, methods=["DELETE"]),
        Route("/proxies/{name}/toxics/{toxic}", endpoints.remove_toxic, methods=["DELETE"]),
    ]
    app = service_app(SERVICE_NAME, routes, lifespan, max_in_flight=64)
    app.state.registry = registry
    return app


def serve(
    host: str,
    port: int,
    proxies: list[tuple[str, str, str]],
    *,
    log_level: str = "info",
    fd: int | None = None,
) -> None:
    """Run the control API on ``host:port`` (or on the inherited listening socket ``fd``) with
    uvicorn until interrupted.

    ``proxies`` are ``(name, listen "host:port", upstream "host:port")``, created at startup;
    they are checked first, so a bad one raises :class:`InvalidProxy` before anything listens.
    If a proxy cannot listen, uvicorn's startup fails and it exits with status 3.
    """
    for name, listen, upstream in proxies:
        check_name(name, "name", InvalidProxy)
        parse_address(listen, "listen")
        parse_address(upstream, "upstream")
    config = uvicorn.Config(
        control_app(proxies),
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        loop="asyncio",
    )
    server = uvicorn.Server(config)
    server.run(sockets=None if fd is None else [socket.socket(fileno=fd)])
    if not server.started:
        sys.exit(3)
