"""Reading requests: JSON bodies, Idempotency-Key, ``Prefer: wait=``."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from metallica.errors import BadRequest, InvalidInput, MissingIdempotencyKey

MAX_BODY_BYTES = 64 * 1024
_KEY = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")
_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def idempotency_key(request: Request) -> str:
    """The request's Idempotency-Key: 1 to 255 printable ASCII characters."""
    key = request.headers.get("idempotency-key")
    if key is None or not _KEY.match(key) or key != key.strip():
        raise MissingIdempotencyKey()
    return key


def prefer_wait(request: Request, *, default: float, maximum: float) -> float:
    """Seconds the client is willing to wait, from ``Prefer: wait=<seconds>`` (RFC 7240)."""
    match = _PREFER_WAIT.search(request.headers.get("prefer", ""))
    if match is None:
        return default
    return min(float(match[1]), maximum)


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 4xx problem."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


def string_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """A string field of a JSON body; a wrong type is a 422."""
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"'{name}' is required", field=name)
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"'{name}' must be a string", field=name)
    return value
