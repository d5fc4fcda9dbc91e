"""Every address behind a service's name, so that a call's attempts rotate over its replicas.

Docker Compose (like any DNS-based discovery) gives the replicas of a service one name, which
resolves to one address per replica. Connecting by that name leaves the choice of replica to the
resolver, and a retry may land on the replica that just failed. So a configured base URL whose
host is a DNS name is expanded into one target per address: the relay connects to the address
and sends the configured name as the ``Host`` header.

Lookups stay off the hot path: the addresses are cached for ``ttl`` seconds; past that, the next
call starts a lookup in the background and goes on with the addresses it has. Only the very first
call towards a service waits for a lookup. A lookup that fails or finds nothing keeps the last
addresses; a name never resolved is used as configured (aiohttp resolves it, and a failure is a
connection error, retried like any other). Addresses are sorted, so that a call's rotation by
attempt number does not change when the DNS server shuffles its answer.

Expanded: ``http`` URLs whose host is neither an IP literal nor ``localhost`` (which resolves to
the same server on ``::1`` and ``127.0.0.1``, where a server often listens on one only). A
dual-stack name's IPv4 addresses are used, or its IPv6 ones if it has none, so that one replica
is not counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
"""Looks up a host name and port; returns the addresses (IP literals) to connect to."""


async def resolve_addresses(host: str, port: int) -> list[str]:
    """The host's IPv4 addresses, or its IPv6 ones if it has none (the event loop's resolver)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    by_family: dict[int, list[str]] = {socket.AF_INET: [], socket.AF_INET6: []}
    for family, _, _, _, address in infos:
        if family in by_family:
            by_family[family].append(str(address[0]))
    return by_family[socket.AF_INET] or by_family[socket.AF_INET6]


@dataclass(frozen=True, slots=True)
class Target:
    """Where one attempt goes: ``url`` is the base URL to connect to; ``host``, when set, is the
    ``Host`` header to send (the configured name, ``url`` naming one of its addresses)."""

    url: str
    host: str | None = None


class _Name:
    """A configured URL whose host is a DNS name, and its last known addresses."""

    def __init__(
        self, url: str, parts: urllib.parse.SplitResult, host: str, port: int | None
    ) -> None:
        self.url = url
        self.host = host
        self.port = port or 80
        self.netloc = parts.netloc
        self.explicit_port = port is not None
        self.rest = url[len(f"{parts.scheme}://{parts.netloc}") :]
        self.scheme = parts.scheme
        self.addresses: tuple[str, ...] = ()
        self.failing = False

    def targets(self) -> list[Target]:
        if not self.addresses:
            return [Target(self.url)]
        return [Target(self._url_for(address), self.netloc) for address in self.addresses]

    def _url_for(self, address: str) -> str:
        literal = f"[{address}]" if ":" in address else address
        port = f":{self.port}" if self.explicit_port else ""
        return f"{self.scheme}://{literal}{port}{self.rest}"


def _name_of(url: str) -> _Name | None:
    """The URL as a name to expand, or None to use it as it is."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port  # a malformed port raises ValueError
    except ValueError:
        return None
    if parts.scheme != "http" or not host or "@" in parts.netloc or host == "localhost":
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _Name(url, parts, host, port)
    return None


class ServiceReplicas:
    """The targets of one service: its configured base URLs, each DNS name expanded into its
    addresses. ``targets()`` is cheap (a cached tuple); see the module for when lookups run."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        resolve: Resolve = resolve_addresses,
        ttl: float = 5.0,
        lookup_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: list[Target | _Name] = []
        for raw in urls:
            url = raw.rstrip("/")
            self._entries.append(_name_of(url) or Target(url))
        self._names = [entry for entry in self._entries if isinstance(entry, _Name)]
        self._resolve = resolve
        self._ttl = ttl
        self._lookup_timeout = lookup_timeout
        self._clock = clock
        self._expires = float("-inf")
        self._looked_up = not self._names  # nothing to look up: ready at once
        self._lookup: asyncio.Task[None] | None = None
        self._targets = self._flatten()

    @property
    def looked_up(self) -> bool:
        """Whether a first lookup of every name has ended (or there is no name to look up)."""
        return self._looked_up

    def targets(self) -> tuple[Target, ...]:
        """The current targets, in a stable order; starts a background lookup when stale."""
        if self._names and self._lookup is None and self._clock() >= self._expires:
            self._start_lookup()
        return self._targets

    async def ready(self) -> None:
        """Wait for the first lookup (only the first call towards the service ever waits)."""
        if self._looked_up:
            return
        lookup = self._lookup or self._start_lookup()
        if lookup is not None:
            # Shielded: a cancelled call does not cancel the lookup other calls wait for.
            await asyncio.shield(lookup)

    async def refresh(self) -> None:
        """Look every name up now."""
        for name in self._names:
            try:
                async with asyncio.timeout(self._lookup_timeout):  # not wait_for: see relay.py
                    found = await self._resolve(name.host, name.port)
                addresses = tuple(sorted(set(found), key=ipaddress.ip_address))
            except Exception as error:  # a failed lookup keeps the last addresses
                if not name.failing:
                    logger.warning(
                        "metallica.replicas_lookup_failed",
                        extra={
                            "host": name.host,
                            "error": repr(error),
                            "kept": len(name.addresses),
                        },
                    )
                name.failing = True
                continue
            if not addresses:
                continue
            name.failing = False
            if addresses != name.addresses:
                logger.info(
                    "metallica.replicas_resolved",
                    extra={"host": name.host, "addresses": ",".join(addresses)},
                )
                name.addresses = addresses
        self._targets = self._flatten()
        self._expires = self._clock() + self._ttl
        self._looked_up = True

    async def aclose(self) -> None:
        if self._lookup is not None:
            self._lookup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lookup

    def _start_lookup(self) -> asyncio.Task[None] | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None  # no event loop (a synchronous caller): the next call starts it
        self._lookup = loop.create_task(self.refresh())
        self._lookup.add_done_callback(self._lookup_done)
        return self._lookup

    def _lookup_done(self, task: asyncio.Task[None]) -> None:
        if self._lookup is task:
            self._lookup = None
        if not task.cancelled() and task.exception() is not None:
            logger.error("metallica.replicas_lookup_crashed", exc_info=task.exception())

    def _flatten(self) -> tuple[Target, ...]:
        targets: list[Target] = []
        for entry in self._entries:
            targets.extend(entry.targets() if isinstance(entry, _Name) else [entry])
        return tuple(targets)
