"""One proxied connection: the client's socket, its upstream socket, and the toxics between.

Four tasks move the data. For each flow a reader fills a small queue, stamping each chunk with
the time it arrived, and a forwarder runs the chunks through the flow's stages (see
:mod:`.stages`) and writes them out. The queue lets reading go on while a toxic holds a chunk
(latency, bandwidth), but it is bounded (:data:`READ_AHEAD` bytes): when it is full the reader
stops and TCP pushes back on the sender, so a slow toxic never buffers without limit.

The proxy tells every open connection about each toxic added or removed (:meth:`attach`,
:meth:`detach`), so toxics act on connections already open: HTTP clients and database pools
reuse theirs. A connection draws each toxic's toxicity once, when the toxic reaches it; the
clocks of ``timeout`` and ``reset_peer`` start then too.

How a connection ends:

* An EOF read from one side is passed on as a half-close (``shutdown(SHUT_WR)``) to the other;
  once both sides have sent theirs, the connection is closed. A blackholed flow holds its EOF
  until the blackhole is removed.
* A reset read from one side resets the other; any other socket error aborts both.
* :meth:`close` ends both sockets one of three ways: ``graceful`` sends what was already
  written, then FIN; ``abort`` closes at once; ``reset`` sends an RST (``SO_LINGER`` on with a
  zero timeout, then close).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
import struct
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Literal, TypeAlias

from metallica.faultproxy import toxics
from metallica.faultproxy.stages import Stage, make_stage
from metallica.faultproxy.stats import Counters

logger = logging.getLogger(__name__)

CloseHow: TypeAlias = Literal["graceful", "abort", "reset"]
Streams: TypeAlias = tuple[asyncio.StreamReader, asyncio.StreamWriter]

CHUNK_SIZE = 64 * 1024
READ_AHEAD = 4 * 1024 * 1024
"""Bytes read ahead per flow while the toxics hold earlier ones (latency times rate in flight)."""
CLOSE_GRACE = 1.0
"""Seconds a closing socket may take to send what is left before it is aborted."""
_LINGER_ZERO = struct.pack("ii", 1, 0)


class _Attached:
    """A toxic as one connection sees it: whether it drew it, its stages, its timer."""

    __slots__ = ("enabled", "stages", "timer", "toxic")

    def __init__(
        self,
        toxic: toxics.Toxic,
        enabled: bool,
        stages: dict[toxics.Flow, Stage],
        timer: asyncio.TimerHandle | None,
    ) -> None:
        self.toxic = toxic
        self.enabled = enabled
        self.stages = stages
        self.timer = timer


class Connection:
    """A client connection, proxied to ``upstream``; ``active`` are the toxics already on."""

    def __init__(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        *,
        upstream: tuple[str, int],
        connect_timeout: float,
        rng: random.Random,
        counters: Counters,
        active: Iterable[toxics.Toxic] = (),
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._client_reader = client_reader
        self._client_writer = client_writer
        self._upstream = upstream
        self._connect_timeout = connect_timeout
        self._rng = rng
        self._counters = counters
        self._upstream_writer: asyncio.StreamWriter | None = None
        self._connecting: asyncio.Task[Streams] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._attached: dict[str, _Attached] = {}
        self._changed = asyncio.Event()
        self._eof_sent: set[toxics.Flow] = set()
        self._closing: CloseHow | None = None
        self.client = _address(client_writer.get_extra_info("peername"))
        for toxic in active:
            self.attach(toxic)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the sockets may still be flushing)."""
        return self._closing is not None

    # --- toxics ----------------------------------------------------------------------------

    def attach(self, toxic: toxics.Toxic) -> None:
        """Let ``toxic`` act on this connection from now on (if it draws it)."""
        if self._closing is not None:
            return
        self.detach(toxic.name)
        enabled = toxic.toxicity >= 1.0 or self._rng.random() < toxic.toxicity
        stages: dict[toxics.Flow, Stage] = {}
        timer: asyncio.TimerHandle | None = None
        if enabled:
            close_gracefully = functools.partial(self.close, "graceful")
            for flow in toxics.FLOWS:
                if toxic.applies_to(flow):
                    stage = make_stage(toxic, self._rng, close_gracefully)
                    if stage is not None:
                        stages[flow] = stage
            if isinstance(toxic, toxics.Timeout) and toxic.timeout_ms > 0:
                timer = self._loop.call_later(toxic.timeout_ms / 1000, self.close, "graceful")
            elif isinstance(toxic, toxics.ResetPeer):
                timer = self._loop.call_later(toxic.timeout_ms / 1000, self.close, "reset")
        self._attached[toxic.name] = _Attached(toxic, enabled, stages, timer)
        self._notify()

    def detach(self, name: str) -> None:
        """Stop the toxic called ``name`` acting on this connection, even mid-chunk."""
        attached = self._attached.pop(name, None)
        if attached is None:
            return
        if attached.timer is not None:
            attached.timer.cancel()
        for stage in attached.stages.values():
            stage.retire()
        self._notify()

    def _stages(self, flow: toxics.Flow) -> tuple[Stage, ...]:
        return tuple(a.stages[flow] for a in self._attached.values() if flow in a.stages)

    def _blackholed(self, flow: toxics.Flow) -> bool:
        return any(
            a.enabled and isinstance(a.toxic, toxics.Timeout) and a.toxic.applies_to(flow)
            for a in self._attached.values()
        )

    def _notify(self) -> None:
        """Wake whoever waits for the toxics to change."""
        self._changed.set()
        self._changed = asyncio.Event()

    # --- life cycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect upstream and move data both ways until the connection ends.

        Returns once both sockets are closed; raises nothing but its own cancellation.
        """
        try:
            streams = await self._connect()
            if streams is None:
                return
            upstream_reader, upstream_writer = streams
            self._upstream_writer = upstream_writer
            if self._closing is not None:  # closed while connecting
                _shut(upstream_writer, self._closing)
                return
            logger.debug(
                "faultproxy.connection_opened",
                extra={"client": self.client, "upstream": _address(self._upstream)},
            )
            pairs: tuple[tuple[toxics.Flow, asyncio.StreamReader, asyncio.StreamWriter], ...] = (
                ("upstream", self._client_reader, upstream_writer),
                ("downstream", upstream_reader, self._client_writer),
            )
            for flow, source, sink in pairs:
                queue = _ChunkQueue(READ_AHEAD)
                self._spawn(flow, functools.partial(self._read, source, queue))
                self._spawn(flow, functools.partial(self._forward, flow, queue, sink))
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self.close("abort")
            await self._settle()
            logger.debug("faultproxy.connection_closed", extra={"client": self.client})

    def close(self, how: CloseHow = "abort") -> None:
        """End the connection (the first call wins; see the module docstring for ``how``)."""
        if self._closing is not None:
            return
        self._closing = how
        for attached in self._attached.values():
            if attached.timer is not None:
                attached.timer.cancel()
        _shut(self._client_writer, how)
        if self._upstream_writer is not None:
            _shut(self._upstream_writer, how)
        if self._connecting is not None:
            self._connecting.cancel()
        for task in self._tasks:
            task.cancel()
        self._notify()

    async def _connect(self) -> Streams | None:
        if self._closing is not None:
            return None
        self._connecting = self._loop.create_task(self._open_upstream())
        try:
            return await self._connecting
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return None  # close() gave up on the connection attempt
        except OSError as exc:  # TimeoutError included
            logger.warning(
                "faultproxy.upstream_unreachable",
                extra={"upstream": _address(self._upstream), "error": repr(exc)},
            )
            self.close("graceful")
            return None
        finally:
            self._connecting = None

    async def _open_upstream(self) -> Streams:
        host, port = self._upstream
        async with asyncio.timeout(self._connect_timeout):
            return await asyncio.open_connection(host, port, limit=CHUNK_SIZE)

    async def _settle(self) -> None:
        """Wait for the tasks to end and the sockets to close (aborting a slow one)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in (self._client_writer, self._upstream_writer):
            if writer is None:
                continue
            with contextlib.suppress(OSError):
                try:
                    async with asyncio.timeout(CLOSE_GRACE):
                        await writer.wait_closed()
                except TimeoutError:
                    writer.transport.abort()

    # --- moving data -----------------------------------------------------------------------

    def _spawn(self, flow: toxics.Flow, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = self._loop.create_task(self._guarded(flow, work))
        self._tasks.add(task)

    async def _guarded(
        self, flow: toxics.Flow, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Run one pump; a socket error on it ends the whole connection."""
        try:
            await work()
        except ConnectionResetError:
            self.close("reset")
        except OSError:
            self.close("abort")
        except Exception:
            logger.exception("faultproxy.pump_failed", extra={"client": self.client, "flow": flow})
            self.close("abort")

    async def _read(self, source: asyncio.StreamReader, queue: _ChunkQueue) -> None:
        while True:
            chunk = await source.read(CHUNK_SIZE)
            await queue.put(chunk, self._loop.time())
            if not chunk:
                return

    async def _forward(
        self,
        flow: toxics.Flow,
        queue: _ChunkQueue,
        sink: asyncio.StreamWriter,
    ) -> None:
        while True:
            chunk, ready = await queue.get()
            if not chunk:
                await self._forward_eof(flow, sink)
                return
            if not self._blackholed(flow):
                await self._through(flow, self._stages(flow), chunk, ready, sink)

    async def _through(
        self,
        flow: toxics.Flow,
        stages: tuple[Stage, ...],
        chunk: bytes,
        ready: float,
        sink: asyncio.StreamWriter,
    ) -> None:
        """Pass ``chunk`` through ``stages`` in order, then write what comes out."""
        if not stages:
            await self._deliver(flow, chunk, sink)
            return
        rest = stages[1:]

        async def emit(piece: bytes, at: float) -> None:
            await self._through(flow, rest, piece, at, sink)

        await stages[0].feed(chunk, ready, emit)

    async def _deliver(self, flow: toxics.Flow, piece: bytes, sink: asyncio.StreamWriter) -> None:
        # Checked at the last moment: a blackhole added while a chunk waited drops it too.
        if not piece or self._closing is not None or self._blackholed(flow):
            return
        sink.write(piece)
        self._counters.forwarded(flow, len(piece))
        await sink.drain()

    async def _forward_eof(self, flow: toxics.Flow, sink: asyncio.StreamWriter) -> None:
        while self._blackholed(flow) and self._closing is None:
            await self._changed.wait()
        if self._closing is not None:
            return
        if sink.can_write_eof():
            sink.write_eof()
        self._eof_sent.add(flow)
        if len(self._eof_sent) == len(toxics.FLOWS):
            self.close("graceful")


class _ChunkQueue:
    """Chunks with their arrival time, first in first out, holding about ``limit`` bytes.

    ``put`` waits while ``limit`` bytes or more are queued (so one chunk may go over).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: deque[tuple[bytes, float]] = deque()
        self._size = 0
        self._changed = asyncio.Condition()

    async def put(self, chunk: bytes, arrival: float) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._size < self._limit)
            self._items.append((chunk, arrival))
            self._size += len(chunk)
            self._changed.notify_all()

    async def get(self) -> tuple[bytes, float]:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            chunk, arrival = self._items.popleft()
            self._size -= len(chunk)
            self._changed.notify_all()
            return chunk, arrival


def _shut(writer: asyncio.StreamWriter, how: CloseHow) -> None:
    if how == "graceful":
        writer.close()
        return
    if how == "reset":
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    writer.transport.abort()


def _address(address: Any) -> str:
    """``host:port`` (``[v6]:port``) for logs."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
