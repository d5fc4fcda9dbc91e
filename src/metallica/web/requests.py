"""Reading requests: JSON bodies, Idempotency-Key, ``Prefer: wait=``."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection
from typing import Any

from starlette.requests import Request

from metallica.errors import (
    BadRequest,
    InvalidId,
    InvalidIdempotencyKey,
    InvalidInput,
    MissingIdempotencyKey,
    PayloadTooLarge,
    UnsupportedMediaType,
)

MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16  # no endpoint takes more than a flat object; the margin is for fault specs
# An Idempotency-Key: printable ASCII, no space at either end (ECMA-262 reads it as Python does:
# the OpenAPI documents state it as is).
IDEMPOTENCY_KEY = re.compile(r"^[!-~](?:[ -~]*[!-~])?$")
IDEMPOTENCY_KEY_MAX_LENGTH = 255
_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def idempotency_key(request: Request) -> str:
    """The request's Idempotency-Key: 1 to :data:`IDEMPOTENCY_KEY_MAX_LENGTH` printable ASCII
    characters, no space at either end. A 400 ``idempotency-key-missing`` without one,
    ``idempotency-key-invalid`` (saying why) for one that breaks the rule."""
    key = request.headers.get("idempotency-key")
    if key is None:
        raise MissingIdempotencyKey()
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH or not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidIdempotencyKey(
            f"the Idempotency-Key {_key_fault(key)}", field="Idempotency-Key"
        )
    return key


def _key_fault(key: str) -> str:
    """What is wrong with a key that breaks the rule (the key itself is never echoed)."""
    if not key:
        return "is empty"
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        return f"is {len(key)} characters long; at most {IDEMPOTENCY_KEY_MAX_LENGTH}"
    if key != key.strip():
        return "starts or ends with a space"
    return "holds a character that is not printable ASCII"


def known_query(request: Request, *names: str) -> None:
    """A 400 ``bad-request`` naming the first query parameter that is not one of ``names`` (a
    misspelt ``?stauts=`` would otherwise be ignored silently), or one given twice."""
    seen = set()
    for name, _ in request.query_params.multi_items():
        if name not in names:
            raise BadRequest(
                f"unknown query parameter (this endpoint takes: {', '.join(names) or 'none'})",
                field=name[:64],
            )
        if name in seen:
            raise BadRequest("a query parameter is given twice", field=name)
        seen.add(name)


def uuid_in_path(request: Request, name: str) -> str:
    """A path parameter that must be a UUID (ids this service gives out), canonical form; a
    400 ``invalid-id`` otherwise (never a database lookup of arbitrary bytes)."""
    value = str(request.path_params[name])
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidId(f"{name} must be a UUID", field=name) from None


def prefer_wait(request: Request, *, default: float, maximum: float) -> float:
    """Seconds the client is willing to wait, from ``Prefer: wait=<seconds>`` (RFC 7240)."""
    match = _PREFER_WAIT.search(request.headers.get("prefer", ""))
    if match is None:
        return default
    return min(float(match[1]), maximum)


async def json_object(request: Request, *, fields: Collection[str] | None = None) -> dict[str, Any]:
    """The body as a JSON object, or a 4xx problem: 415 unless it says it is JSON, 413 past
    :data:`MAX_BODY_BYTES` (refused from ``Content-Length``, or as soon as the stream passes
    it, never read whole), 422 if it is not a JSON object, nests deeper than
    :data:`MAX_JSON_DEPTH`, holds a string that is not Unicode text (a lone surrogate such as
    ``"\\ud800"``: JSON escapes allow it, nothing can store, hash or answer it), or (with
    ``fields``) carries a field not in ``fields``."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType()
    raw = await _body(request)
    try:
        body = json.loads(raw)
    except RecursionError:
        raise InvalidInput(f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    depth, text = _shape(body)
    if depth > MAX_JSON_DEPTH:
        raise InvalidInput(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    if not text:
        raise InvalidInput("the body holds a string that is not Unicode text (a lone surrogate)")
    if fields is not None:
        unknown = sorted(set(body) - set(fields))
        if unknown:
            raise InvalidInput(
                f"unknown field {unknown[0]!r}; this endpoint takes {', '.join(sorted(fields))}",
                field=unknown[0],
            )
    return body


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _shape(value: Any) -> tuple[int, bool]:
    """How deeply ``value`` nests (a scalar is 0, ``{}`` is 1), and whether every string in it,
    keys included, is Unicode text (encodable: no lone surrogate); without recursion."""
    deepest, text, pending = 0, True, [(value, 1)]
    while pending:
        current, level = pending.pop()
        if isinstance(current, str):
            text = text and _is_text(current)
            continue
        if isinstance(current, dict):
            text = text and all(_is_text(key) for key in current)
            current = list(current.values())
        if isinstance(current, list):
            deepest = max(deepest, level)
            pending.extend((child, level + 1) for child in current)
    return deepest, text


def _is_text(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
