"""Mail addresses: a pragmatic check (one @, no spaces, brackets or line breaks)."""

from __future__ import annotations

import re

from metallica.errors import InvalidInput

# No control character either: the mail-sender refuses them in a header, and protools must
# refuse every address the mail-sender would (once a password exists, its mail must go out).
# (Written so that ECMA-262 reads it as Python does: the OpenAPI documents state it as is.)
ADDRESS = re.compile(
    r'^[^@\s<>(),;:"\[\]\\\x00-\x1f\x7f-\x9f]+@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$'
)
MAX_LENGTH = 254


def validate(address: str, field: str) -> str:
    """Return ``address`` if it looks like a mail address, else raise :class:`InvalidInput`."""
    if len(address) > MAX_LENGTH or not ADDRESS.fullmatch(address):
        raise InvalidInput(f"'{field}' must be a mail address", field=field)
    return address


def validate_domain(domain: str) -> str:
    """Return ``domain`` if ``<username>@<domain>`` makes mail addresses, else raise ValueError
    (a configuration error, caught at start rather than after a password exists)."""
    try:
        validate(f"user@{domain}", "mail domain")
    except InvalidInput:
        raise ValueError(f"not a mail domain: {domain!r}") from None
    return domain
