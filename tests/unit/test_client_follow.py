"""The client's follower of the log (``ProtoolsClient.follow_log``) against a scripted SSE
server on loopback: heartbeats between events, an end that says where to resume, a resume that
sends Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from metallica.client import ProtoolsClient
from tests.asgi_server import AsgiServer
from tests.waiting import eventually


def event(position: int) -> str:
    data = {"position": position, "workflow_id": "w", "version": position, "type": "T"}
    return f"id: {position}\r\ndata: {json.dumps(data)}\r\n\r\n"


def test_heartbeats_are_skipped_and_an_end_is_resumed_from_its_last_event() -> None:
    asked: list[str | None] = []

    async def stream(request: Request) -> Response:
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:  # two events, a heartbeat between and after, then an end
            body = event(1) + ": ping\r\n\r\n" + event(2) + ": ping\r\n\r\n"
            body += 'event: end\r\ndata: {"reason": "max-duration", "resume_after": 2}\r\n\r\n'
        else:
            body = ": ping\r\n\r\n" + event(3)
        return Response(body, media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/events/stream", stream)])
    with AsgiServer(app) as server, ProtoolsClient(server.url, "t") as client:
        received = []
        for logged in client.follow_log(reconnects=0):
            received.append(logged["position"])
            if logged["position"] == 3:
                break
    assert received == [1, 2, 3]
    assert asked == [None, "2"]


def test_close_ends_a_stream_blocked_between_heartbeats_at_once() -> None:
    """The lab stops its followers by closing their clients: a follower blocked reading a quiet
    stream must end then, not at the next heartbeat (CI failed on it: 15 s were not enough)."""
    opened = threading.Event()

    async def quiet(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            yield event(1)
            opened.set()
            await asyncio.sleep(60)  # no heartbeat for a minute
            yield event(2)

        return StreamingResponse(body(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/events/stream", quiet)])
    received: list[int] = []
    with AsgiServer(app) as server:
        client = ProtoolsClient(server.url, "t")

        def follow() -> None:
            for logged in client.follow_log(reconnects=5, idle_timeout=120):
                received.append(logged["position"])

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert opened.wait(10)
        assert eventually(lambda: received == [1], 10)
        started = time.monotonic()
        client.close()
        follower.join(5)
        assert not follower.is_alive(), "the follower outlived its client's close()"
        assert time.monotonic() - started < 2
    assert received == [1]
