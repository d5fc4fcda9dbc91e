"""Named fault proxies on one event loop: what the control API and ProxyThread both manage."""

from __future__ import annotations

import random

from metallica.faultproxy.errors import InvalidProxy, ProxyExists, UnknownProxy
from metallica.faultproxy.proxy import FaultProxy
from metallica.faultproxy.toxics import check_name


def parse_address(text: object, what: str) -> tuple[str, int]:
    """``("host", port)`` from ``"host:port"`` or ``"[v6 address]:port"``."""
    if not isinstance(text, str):
        raise InvalidProxy(f"'{what}' must be a string 'host:port'", field=what)
    host, colon, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InvalidProxy(
            f"'{what}' must be 'host:port' ('[::1]:port' for IPv6), not {text!r}", field=what
        )
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ProxyRegistry:
    """Fault proxies by name, all on the event loop that calls the async methods.

    ``rng`` is shared by the proxies (seed it for repeatable toxicity and jitter).
    """

    def __init__(self, *, rng: random.Random | None = None, connect_timeout: float = 5.0) -> None:
        self._rng = rng or random.Random()
        self._connect_timeout = connect_timeout
        self._proxies: dict[str, FaultProxy] = {}

    def get(self, name: str) -> FaultProxy:
        """The proxy called ``name``. Raises :class:`UnknownProxy`."""
        try:
            return self._proxies[name]
        except KeyError:
            raise UnknownProxy(f"there is no proxy '{name}'", proxy=name) from None

    def all(self) -> list[FaultProxy]:
        """Every proxy, by name."""
        return [self._proxies[name] for name in sorted(self._proxies)]

    async def create(self, name: str, listen: str, upstream: str) -> FaultProxy:
        """Create and start a proxy; ``listen`` and ``upstream`` are ``host:port`` strings.

        Raises :class:`InvalidProxy`, :class:`ProxyExists` or :class:`ListenFailed`.
        """
        check_name(name, "name", InvalidProxy)
        listen_host, listen_port = parse_address(listen, "listen")
        upstream_host, upstream_port = parse_address(upstream, "upstream")
        if name in self._proxies:
            raise ProxyExists(f"there is already a proxy '{name}'", proxy=name)
        proxy = FaultProxy(
            listen_host,
            listen_port,
            upstream_host,
            upstream_port,
            name,
            rng=self._rng,
            connect_timeout=self._connect_timeout,
        )
        self._proxies[name] = proxy  # taken now, so a concurrent create of the name fails
        try:
            await proxy.start()
        except BaseException:
            del self._proxies[name]
            raise
        return proxy

    async def delete(self, name: str) -> None:
        """Stop the proxy called ``name`` and forget it. Raises :class:`UnknownProxy`."""
        proxy = self.get(name)
        del self._proxies[name]
        await proxy.stop()

    async def close(self) -> None:
        """Stop and forget every proxy."""
        proxies, self._proxies = list(self._proxies.values()), {}
        for proxy in proxies:
            await proxy.stop()
