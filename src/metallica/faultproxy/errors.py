"""What can go wrong when driving fault proxies, as Metallica errors.

Each is a :class:`~metallica.errors.MetallicaError`, so the control API answers it as problem+json
with no extra mapping; the invalid and unknown ones are also a ``ValueError`` or ``LookupError``,
which is what a Python caller of :class:`~metallica.faultproxy.runner.ProxyThread` expects.
"""

from __future__ import annotations

from metallica.errors import InvalidInput, MetallicaError, NotFound


class InvalidToxic(InvalidInput, ValueError):
    """The toxic is not valid."""

    code = "invalid-toxic"
    title = "Invalid toxic"


class InvalidProxy(InvalidInput, ValueError):
    """The proxy definition is not valid."""

    code = "invalid-proxy"
    title = "Invalid proxy"


class UnknownProxy(NotFound, LookupError):
    """No proxy has this name."""

    code = "proxy-not-found"
    title = "Proxy not found"


class UnknownToxic(NotFound, LookupError):
    """The proxy has no toxic with this name."""

    code = "toxic-not-found"
    title = "Toxic not found"


class ProxyExists(MetallicaError):
    """A proxy with this name already exists."""

    code = "proxy-exists"
    status = 409
    title = "Proxy exists"


class ToxicExists(MetallicaError):
    """The proxy already has a toxic with this name; remove it first."""

    code = "toxic-exists"
    status = 409
    title = "Toxic exists"


class ListenFailed(MetallicaError):
    """The proxy cannot listen on its address (is the port in use?)."""

    code = "listen-failed"
    status = 409
    title = "Cannot listen"
