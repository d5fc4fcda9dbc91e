"""The closed loop's client waits out a refusal for load and sends the command again."""

from __future__ import annotations

import asyncio
from collections import Counter

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metallica.load import records as told
from metallica.load.closedloop import ClosedLoop
from tests.asgi_server import AsgiServer


def refusing_once() -> tuple[Starlette, Counter[str]]:
    """Refuses each key's first try (503 with ``Retry-After: 0``), then completes it."""
    tries: Counter[str] = Counter()

    async def create(request: Request) -> Response:
        key = request.headers["idempotency-key"]
        tries[key] += 1
        if tries[key] == 1:
            return JSONResponse({"type": "overloaded"}, 503, headers={"Retry-After": "0"})
        body = await request.json()
        return JSONResponse(
            {"workflow_id": key, "status": "completed", "password": f"pw-{body['username']}"}
        )

    routes = [Route("/v1/workflows/password-creation", create, methods=["POST"])]
    return Starlette(routes=routes), tries


def test_a_refused_command_is_sent_again_after_retry_after_and_is_no_error() -> None:
    app, tries = refusing_once()
    with AsgiServer(app) as server:
        loop = ClosedLoop([server.url], "token", prefix="t")
        measured = asyncio.run(loop.run(3, 9))
    assert measured.count == 9
    assert measured.errors == {}
    assert measured.refused == 9
    assert set(tries.values()) == {2}
    for sample in measured.samples:
        assert sample.record.told == told.OK
        assert sample.record.posts == 2
        assert sample.record.statuses == [503, 200]
