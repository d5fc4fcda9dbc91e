"""``POST /v1/faults`` and ``DELETE /v1/faults``: arm and clear a service's fault points."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metallica.errors import InvalidInput, NotFound
from metallica.faults import ACTIONS, Fault, FaultPoints
from metallica.web.app import authenticated
from metallica.web.auth import Credentials
from metallica.web.requests import json_object


def fault_routes(token: Credentials | str, faults: FaultPoints) -> list[Route]:
    """The fault endpoints; absent (404) unless the service runs with faults enabled."""

    async def arm(request: Request) -> Response:
        if not faults.enabled:
            raise NotFound("fault injection is disabled (start with METALLICA_FAULTS=1)")
        body = await json_object(request)
        point, action = body.get("point"), body.get("action")
        if point not in faults.points:
            raise InvalidInput(f"'point' must be one of {list(faults.points)}", field="point")
        if action not in ACTIONS:
            raise InvalidInput(f"'action' must be one of {list(ACTIONS)}", field="action")
        delay_ms, count = body.get("delay_ms", 0), body.get("count", 1)
        status, attempt = body.get("status", 500), body.get("attempt")
        if not all(isinstance(v, int) and v >= 0 for v in (delay_ms, count)):
            raise InvalidInput("'delay_ms' and 'count' must be non-negative integers")
        if status not in (500, 503):
            raise InvalidInput("'status' must be 500 or 503", field="status")
        if attempt is not None and not (isinstance(attempt, int) and attempt >= 1):
            raise InvalidInput("'attempt' must be a positive integer", field="attempt")
        faults.arm(Fault(point, action, delay_ms, max(count, 1), status, attempt))
        return JSONResponse({"armed": point, "action": action}, 201)

    async def clear(request: Request) -> Response:
        if not faults.enabled:
            raise NotFound("fault injection is disabled (start with METALLICA_FAULTS=1)")
        faults.clear()
        return Response(status_code=204)

    return [
        Route("/v1/faults", authenticated(token, arm), methods=["POST"]),
        Route("/v1/faults", authenticated(token, clear), methods=["DELETE"]),
    ]
