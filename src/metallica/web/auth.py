"""Bearer-token authentication: who is calling, by name.

A service accepts a set of named tokens (:class:`Credentials`): protools its clients', the
generator and the mail-sender protools' own service credential, distinct from any client's.
Several tokens may be valid at once, under one name or several: a token is rotated by adding
the new one, moving the callers over, then removing the old one, with no downtime. Tokens are
compared in constant time, every one of them every time, so the time taken says nothing about
which token came close. A request without a valid token is a 401 problem+json; the name of the
caller is then on ``request.state.caller`` for the endpoint (protools checks that a workflow's
results go only to the client that created it: a 403 otherwise).

Configuration (see the CLI): ``name:token`` entries, comma-separated, in a variable, or one per
line in a file (blank lines and ``#`` comments ignored). A token is never logged or echoed in
an error: a malformed entry is reported by its position.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from metallica.errors import Unauthorized

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MIN_TOKEN_LENGTH = 16
DEFAULT_NAME = "default"  # the caller presenting METALLICA_API_TOKEN


class CredentialsError(ValueError):
    """A malformed token configuration; the message names the entry, never its token."""


@dataclass(frozen=True)
class Credentials:
    """Valid tokens and the name each stands for."""

    tokens: tuple[tuple[bytes, str], ...]

    @classmethod
    def of(cls, entries: Mapping[str, str] | Iterable[tuple[str, str]]) -> Credentials:
        """From ``(name, token)`` pairs (or a name -> token mapping)."""
        pairs = entries.items() if isinstance(entries, Mapping) else entries
        return cls(tuple((token.encode(), name) for name, token in pairs if token))

    @classmethod
    def parse(cls, spec: str, *, source: str) -> Credentials:
        """From ``name:token`` entries separated by commas or new lines."""
        pairs = []
        entries = [part.strip() for line in spec.splitlines() for part in line.split(",")]
        entries = [entry for entry in entries if entry and not entry.startswith("#")]
        for position, entry in enumerate(entries, start=1):
            name, separator, token = entry.partition(":")
            name, token = name.strip(), token.strip()
            if not separator or not NAME.fullmatch(name):
                raise CredentialsError(
                    f"{source}: entry {position} is not name:token with a lower-case name"
                )
            if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
                raise CredentialsError(
                    f"{source}: the token of {name!r} (entry {position}) must be at least "
                    f"{MIN_TOKEN_LENGTH} characters, without spaces"
                )
            pairs.append((name, token))
        return cls.of(pairs)

    @classmethod
    def load(
        cls,
        *,
        entries: str | None = None,
        file: Path | None = None,
        single: str | None = None,
        variable: str,
    ) -> Credentials:
        """The union of ``entries`` (the variable's text), ``file``'s lines, and ``single``
        (a lone token, named :data:`DEFAULT_NAME`)."""
        found = cls.parse(entries, source=variable) if entries else cls(())
        if file is not None:
            try:
                text = file.read_text(encoding="utf-8")
            except OSError as error:
                message = f"{variable}_FILE: cannot read {file}: {error.strerror}"
                raise CredentialsError(message) from None
            found = found + cls.parse(text, source=str(file))
        if single:
            found = found + cls.of([(DEFAULT_NAME, single)])
        return found

    def __add__(self, other: Credentials) -> Credentials:
        return Credentials(self.tokens + other.tokens)

    def __bool__(self) -> bool:
        return bool(self.tokens)

    @property
    def names(self) -> list[str]:
        return sorted({name for _, name in self.tokens})

    def identify(self, presented: str) -> str | None:
        """The name ``presented`` stands for, or None. Every token is compared, in constant
        time, whatever matched first."""
        candidate, found = presented.encode(), None
        for token, name in self.tokens:
            if hmac.compare_digest(candidate, token) and found is None:
                found = name
        return found


def bearer(request: Request) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ("" when there is none)."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return presented.strip() if scheme.lower() == "bearer" else ""


def require_caller(request: Request, credentials: Credentials) -> str:
    """The caller's name, also put on ``request.state.caller``; :class:`Unauthorized` unless
    the request carries one of ``credentials``' tokens."""
    name = credentials.identify(bearer(request))
    if name is None:
        raise Unauthorized()
    request.state.caller = name
    return name


def require_token(request: Request, token: str) -> None:
    """Raise :class:`Unauthorized` unless the request carries ``Authorization: Bearer <token>``."""
    require_caller(request, Credentials.of([(DEFAULT_NAME, token)]))
