"""RFC 9457 problem details: every error any service answers is one of these.

One exception-handler table per app (:func:`exception_handlers`) maps Metallica errors, Starlette's
HTTP errors and anything unexpected to ``application/problem+json``. An unexpected error gets a
generic 500 body: no stack trace or internal detail ever reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from metallica.errors import DeadlinePassed, MetallicaError
from metallica.problems import MEDIA_TYPE, from_error, problem

__all__ = ["MEDIA_TYPE", "exception_handlers", "from_error", "problem", "problem_response"]

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def problem_response(
    document: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        dict(document), status_code=int(document["status"]), media_type=MEDIA_TYPE, headers=headers
    )


async def _on_metallica_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MetallicaError)
    headers = {}
    retry_after = exc.extensions.get("retry_after")
    if retry_after is None and exc.status == 503:
        retry_after = 1  # a busy or unreachable database: worth retrying soon
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if isinstance(exc, DeadlinePassed):
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.shed.labels("deadline-passed").inc()
    elif exc.status >= 500:
        logger.warning(
            "metallica.request_failed", extra={"code": exc.code, "path": request.url.path}
        )
    return problem_response(from_error(exc, instance=request.url.path), headers)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http-error", "HTTP error"))
    return problem_response(
        problem(exc.status_code, code, title, str(exc.detail), instance=request.url.path),
        dict(exc.headers or {}),
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    logger.error(
        "metallica.unexpected_error",
        exc_info=exc,
        extra={"path": request.url.path, "method": request.method},
    )
    return problem_response(
        problem(500, "internal-error", "Internal error", "The server failed; it was logged.")
    )


def exception_handlers() -> dict[Any, Any]:
    """The handler table for ``Starlette(exception_handlers=...)``."""
    return {
        MetallicaError: _on_metallica_error,
        HTTPException: _on_http_exception,
        Exception: _on_unexpected,
    }
