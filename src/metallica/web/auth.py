"""Bearer-token authentication: every endpoint but ``/healthz`` requires the configured token."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from metallica.errors import Unauthorized


def require_token(request: Request, token: str) -> None:
    """Raise :class:`Unauthorized` unless the request carries ``Authorization: Bearer <token>``."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), token.encode()
    ):
        raise Unauthorized()
