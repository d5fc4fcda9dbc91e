"""A TCP fault proxy: listens on one address, forwards to one upstream, applies toxics.

In the spirit of Shopify's Toxiproxy, on asyncio. A :class:`FaultProxy` belongs to the event
loop that started it and is driven from it: await its methods there. To drive proxies from
synchronous code (pytest), use :class:`~metallica.faultproxy.runner.ProxyThread`.

The proxy owns the listener and the set of toxics; each accepted connection is a
:class:`~metallica.faultproxy.connection.Connection` task. A toxic added or removed is passed to
every open connection at once. ``down`` is the proxy's own business: it closes the listening
socket (new clients get ECONNREFUSED) and every open connection, and removing it listens on the
same port again.
"""

from __future__ import annotations

import asyncio
import logging
import random

from metallica.faultproxy.connection import CHUNK_SIZE, Connection
from metallica.faultproxy.errors import (
    InvalidProxy,
    ListenFailed,
    ToxicExists,
    UnknownToxic,
)
from metallica.faultproxy.stats import Counters, ProxyStats
from metallica.faultproxy.toxics import Down, Toxic, check_name

logger = logging.getLogger(__name__)


class FaultProxy:
    """Forwards TCP connections from ``listen_host:listen_port`` to the upstream, with toxics.

    ``listen_port=0`` picks a free port: read it from :attr:`port` after :meth:`start`. ``rng``
    draws toxicity and jitter (pass a seeded one for repeatable tests); ``connect_timeout`` bounds
    each connection to the upstream.
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        upstream_host: str,
        upstream_port: int,
        name: str = "proxy",
        *,
        rng: random.Random | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.name = check_name(name, "name", InvalidProxy)
        _check_port(listen_port, "listen", minimum=0)
        _check_port(upstream_port, "upstream", minimum=1)
        if not listen_host or not upstream_host:
            raise InvalidProxy("the listen and upstream hosts must not be empty")
        self.listen_host = listen_host
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._port = listen_port
        self._rng = rng or random.Random()
        self._connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._running = False
        self._toxics: dict[str, Toxic] = {}
        self._connections: dict[Connection, asyncio.Task[None]] = {}
        self._counters = Counters()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (
            f"FaultProxy({self.name!r}, {self.listen_host}:{self._port} -> "
            f"{self.upstream_host}:{self.upstream_port})"
        )

    # --- state ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on: the one picked for 0 once started, kept while down."""
        return self._port

    @property
    def running(self) -> bool:
        """Between :meth:`start` and :meth:`stop` (down or not)."""
        return self._running

    @property
    def down(self) -> bool:
        """Whether a ``down`` toxic is on."""
        return any(isinstance(toxic, Down) for toxic in self._toxics.values())

    def toxics(self) -> tuple[Toxic, ...]:
        """The toxics on, in the order they were added (the order data goes through them)."""
        return tuple(self._toxics.values())

    def stats(self) -> ProxyStats:
        return self._counters.snapshot(active=len(self._connections))

    # --- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (unless a ``down`` toxic is already on). Raises :class:`ListenFailed`."""
        async with self._lock:
            if self._running:
                return
            self._running = True
            try:
                if not self.down or self._port == 0:
                    await self._listen()
                if self.down:
                    await self._drop_traffic()
            except BaseException:
                self._running = False
                raise
            logger.info(
                "faultproxy.started",
                extra={"proxy": self.name, "port": self._port, "upstream": self.upstream_host},
            )

    async def stop(self) -> None:
        """Stop listening and close every connection; returns when they are all closed."""
        async with self._lock:
            if not self._running:
                return
            self._running = False
            await self._drop_traffic()
            logger.info("faultproxy.stopped", extra={"proxy": self.name})

    # --- toxics --------------------------------------------------------------------------------

    async def add_toxic(self, toxic: Toxic) -> None:
        """Put ``toxic`` on, for new and open connections. Raises :class:`ToxicExists`."""
        async with self._lock:
            if toxic.name in self._toxics:
                raise ToxicExists(
                    f"proxy '{self.name}' already has a toxic '{toxic.name}'",
                    proxy=self.name,
                    toxic=toxic.name,
                )
            self._toxics[toxic.name] = toxic
            if isinstance(toxic, Down):
                if self._running:
                    await self._drop_traffic()
            else:
                for connection in list(self._connections):
                    connection.attach(toxic)
            logger.info(
                "faultproxy.toxic_added",
                extra={"proxy": self.name, "toxic": toxic.name, "type": toxic.kind},
            )

    async def remove_toxic(self, name: str) -> None:
        """Take the toxic called ``name`` off. Raises :class:`UnknownToxic`.

        Removing the last ``down`` toxic listens again on the same port; if that fails
        (:class:`ListenFailed`), the toxic stays on.
        """
        async with self._lock:
            toxic = self._toxics.pop(name, None)
            if toxic is None:
                raise UnknownToxic(
                    f"proxy '{self.name}' has no toxic '{name}'", proxy=self.name, toxic=name
                )
            for connection in list(self._connections):
                connection.detach(name)
            try:
                await self._reopen()
            except ListenFailed:
                self._toxics[name] = toxic
                raise
            logger.info("faultproxy.toxic_removed", extra={"proxy": self.name, "toxic": name})

    async def clear(self) -> None:
        """Take every toxic off (see :meth:`remove_toxic` about ``down``)."""
        async with self._lock:
            removed, self._toxics = self._toxics, {}
            for connection in list(self._connections):
                for name in removed:
                    connection.detach(name)
            try:
                await self._reopen()
            except ListenFailed:
                self._toxics = {n: t for n, t in removed.items() if isinstance(t, Down)}
                raise
            if removed:
                logger.info("faultproxy.toxics_cleared", extra={"proxy": self.name})

    # --- listener and connections --------------------------------------------------------------

    async def _listen(self) -> None:
        server = await self._bind(self._port)
        ports = [sock.getsockname()[1] for sock in server.sockets]
        if len(set(ports)) > 1:
            # Port 0 on a name with several addresses (localhost: ::1 and 127.0.0.1) picked a
            # port per address; listen on the first one everywhere instead.
            server.close()
            await server.wait_closed()
            server = await self._bind(ports[0])
        self._server = server
        self._port = server.sockets[0].getsockname()[1]

    async def _bind(self, port: int) -> asyncio.Server:
        try:
            return await asyncio.start_server(
                self._accept, self.listen_host, port, limit=CHUNK_SIZE
            )
        except OSError as exc:
            raise ListenFailed(
                f"proxy '{self.name}' cannot listen on {self.listen_host}:{port}: "
                f"{exc.strerror or exc}",
                proxy=self.name,
            ) from exc

    async def _reopen(self) -> None:
        if self._running and self._server is None and not self.down:
            await self._listen()

    async def _drop_traffic(self) -> None:
        """Close the listener and every connection, and wait until they are closed."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._connections.values())
        for connection in list(self._connections):
            connection.close("abort")
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A client connected (called by asyncio, on the loop)."""
        if not self._running or self.down:
            writer.transport.abort()
            return
        self._counters.connections_accepted += 1
        connection = Connection(
            reader,
            writer,
            upstream=(self.upstream_host, self.upstream_port),
            connect_timeout=self._connect_timeout,
            rng=self._rng,
            counters=self._counters,
            active=[t for t in self._toxics.values() if not isinstance(t, Down)],
        )
        task = asyncio.get_running_loop().create_task(
            connection.run(), name=f"faultproxy:{self.name}:{connection.client}"
        )
        self._connections[connection] = task
        task.add_done_callback(lambda _: self._connections.pop(connection, None))


def _check_port(port: object, what: str, *, minimum: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not minimum <= port <= 65535:
        raise InvalidProxy(f"the {what} port must be from {minimum} to 65535", field=what)
