"""The console's session: a token exchanged once for a signed cookie, and the CSRF token of its
forms.

A person opens the console with a token allowed to read the whole log (``METALLICA_LOG_READERS``,
the broker's reader right). The token is posted once, in a form's body, never in a URL; the
answer sets a cookie that names the reader, says until when it holds, and carries a random
nonce, all signed with HMAC-SHA256 keyed by **the token itself**. So:

- any replica that knows the token checks a cookie, with no session store and no new secret;
- removing a token (rotation, revocation) ends every session opened with it at once;
- the cookie never holds the token, and an ``HttpOnly`` cookie is out of any script's reach.

The CSRF token of a session's forms is another HMAC of its nonce, keyed by the same token: a page
of another site can neither read it (same-origin policy) nor forge it, and the cookie alone is not
enough to change anything (``SameSite=Strict`` already keeps it off cross-site requests; the
token is the second lock).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from metallica.web.auth import Credentials

COOKIE = "metallica_console"
LIFETIME = 8 * 3600.0  # seconds a session holds: a working day
_VERSION = "v1"


@dataclass(frozen=True)
class Session:
    """Who opened the console, until when, and the nonce its CSRF token derives from."""

    reader: str
    expires: float
    nonce: str


def _mac(token: bytes, *parts: str) -> str:
    digest = hmac.new(token, "|".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _tokens_of(credentials: Credentials, reader: str) -> list[bytes]:
    return [token for token, name in credentials.tokens if name == reader]


def open_session(
    credentials: Credentials, presented: str, *, readers: frozenset[str], now: float
) -> tuple[Session, str] | None:
    """The session ``presented`` opens and its cookie's value; None unless it is the token of
    a client allowed to read the whole log."""
    reader = credentials.identify(presented)
    if reader is None or reader not in readers:
        return None
    session = Session(reader, now + LIFETIME, secrets.token_urlsafe(16))
    fields = (_VERSION, session.reader, f"{session.expires:.0f}", session.nonce)
    signature = _mac(presented.encode(), "session", *fields)
    return session, ".".join((*fields, signature))


def read_session(
    credentials: Credentials, cookie: str, *, readers: frozenset[str], now: float
) -> Session | None:
    """The session a cookie's value stands for; None if it is malformed, forged, expired, or
    signed with a token that is no longer valid (or whose client may no longer read the log)."""
    parts = cookie.split(".")
    if len(parts) != 5 or parts[0] != _VERSION:
        return None
    version, reader, expires_text, nonce, signature = parts
    if reader not in readers or not expires_text.isdigit() or float(expires_text) <= now:
        return None
    valid = False
    for token in _tokens_of(credentials, reader):  # every one, in constant time each
        expected = _mac(token, "session", version, reader, expires_text, nonce)
        valid |= hmac.compare_digest(expected, signature)
    return Session(reader, float(expires_text), nonce) if valid else None


def csrf_token(credentials: Credentials, session: Session) -> str:
    """The CSRF token of ``session``'s forms (the same for every token of its reader's that
    signs: the first)."""
    tokens = _tokens_of(credentials, session.reader)
    return _mac(tokens[0], "csrf", session.nonce) if tokens else ""


def csrf_valid(credentials: Credentials, session: Session, presented: str) -> bool:
    """Whether ``presented`` is ``session``'s CSRF token."""
    valid = False
    for token in _tokens_of(credentials, session.reader):
        valid |= hmac.compare_digest(_mac(token, "csrf", session.nonce), presented)
    return valid
