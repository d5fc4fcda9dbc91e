"""Stages: what a data toxic does to the bytes of one connection, in one direction.

A connection keeps one stage per data toxic and flow (so ``limit_data`` counts and ``bandwidth``
paces each connection and direction on its own). The connection hands every chunk it reads to
the first stage of its flow; each stage passes what it lets through — maybe later, maybe cut
up — to the next one with ``emit``, and the last ``emit`` writes to the socket. A chunk goes
all the way through before the next one starts, so order is kept.

Each piece travels with a time: when it was ready at this stage's input (for the first stage,
when it was read). ``latency`` waits until that time plus its delay, so a stream of chunks is
shifted by the latency rather than slowed down by it once per chunk, and two latencies add up.

When its toxic is removed, a stage is *retired*: a wait in progress ends at once and from then
on the stage lets everything through untouched, so a removed toxic stops acting right away
even on data already in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

from metallica.faultproxy import toxics

Emit = Callable[[bytes, float], Awaitable[None]]
"""Pass ``(piece, ready_at)`` to the next stage (or to the socket)."""


class Stage:
    """One data toxic acting on one connection and flow."""

    def __init__(self) -> None:
        self._retired = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    @property
    def retired(self) -> bool:
        return self._retired.is_set()

    def retire(self) -> None:
        """The toxic was removed: stop waiting, let everything through from now on."""
        self._retired.set()

    async def feed(self, chunk: bytes, ready: float, emit: Emit) -> None:
        """Take ``chunk`` (ready at loop time ``ready``) and emit what goes through."""
        if self.retired:
            await emit(chunk, ready)
        else:
            await self._feed(chunk, ready, emit)

    async def _feed(self, chunk: bytes, ready: float, emit: Emit) -> None:
        raise NotImplementedError

    def now(self) -> float:
        return self._loop.time()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the stage is retired meanwhile."""
        if seconds <= 0 or self.retired:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._retired.wait()


class LatencyStage(Stage):
    def __init__(self, toxic: toxics.Latency, rng: random.Random) -> None:
        super().__init__()
        self._latency = toxic.latency_ms / 1000
        self._jitter = toxic.jitter_ms / 1000
        self._rng = rng

    async def _feed(self, chunk: bytes, ready: float, emit: Emit) -> None:
        delay = self._latency
        if self._jitter:
            delay = max(0.0, delay + self._rng.uniform(-self._jitter, self._jitter))
        due = ready + delay
        await self.pause(due - self.now())
        await emit(chunk, min(due, self.now()))


class SlicerStage(Stage):
    def __init__(self, toxic: toxics.Slicer, rng: random.Random) -> None:
        super().__init__()
        self._average = toxic.average_size
        self._variation = toxic.size_variation
        self._delay = toxic.delay_us / 1_000_000
        self._rng = rng

    async def _feed(self, chunk: bytes, ready: float, emit: Emit) -> None:
        offset = 0
        while offset < len(chunk):
            if self.retired:
                await emit(chunk[offset:], self.now())
                return
            size = self._average
            if self._variation:
                size += self._rng.randint(-self._variation, self._variation)
            piece = chunk[offset : offset + size]
            offset += len(piece)
            await emit(piece, self.now())
            if offset < len(chunk):
                await self.pause(self._delay)


class BandwidthStage(Stage):
    """Pace pieces of at most 100 ms worth of data so that no byte leaves before its time.

    A piece of ``n`` bytes is sent once its transmission time ``n / rate`` has passed, so
    moving ``size`` bytes takes at least ``size / rate`` seconds.
    """

    def __init__(self, toxic: toxics.Bandwidth) -> None:
        super().__init__()
        self._rate = toxic.rate_kb_per_s * 1000
        self._piece = max(1, self._rate // 10)
        self._clock = 0.0

    async def _feed(self, chunk: bytes, ready: float, emit: Emit) -> None:
        offset = 0
        while offset < len(chunk):
            if self.retired:
                await emit(chunk[offset:], self.now())
                return
            piece = chunk[offset : offset + self._piece]
            offset += len(piece)
            self._clock = max(self._clock, self.now()) + len(piece) / self._rate
            await self.pause(self._clock - self.now())
            await emit(piece, self.now())


class LimitDataStage(Stage):
    """Let ``bytes`` bytes through, then close the connection (gracefully: data first, FIN)."""

    def __init__(self, toxic: toxics.LimitData, close: Callable[[], None]) -> None:
        super().__init__()
        self._limit = toxic.bytes
        self._sent = 0
        self._close = close

    async def _feed(self, chunk: bytes, ready: float, emit: Emit) -> None:
        room = self._limit - self._sent
        if room > 0:
            piece = chunk[:room]
            self._sent += len(piece)
            await emit(piece, ready)
        if self._sent >= self._limit:
            self._close()


def make_stage(toxic: toxics.Toxic, rng: random.Random, close: Callable[[], None]) -> Stage | None:
    """The stage acting out ``toxic`` on one flow, or None if it is not a data toxic.

    ``close`` closes the connection gracefully (``limit_data`` calls it).
    """
    if isinstance(toxic, toxics.Latency):
        return LatencyStage(toxic, rng)
    if isinstance(toxic, toxics.Slicer):
        return SlicerStage(toxic, rng)
    if isinstance(toxic, toxics.Bandwidth):
        return BandwidthStage(toxic)
    if isinstance(toxic, toxics.LimitData):
        return LimitDataStage(toxic, close)
    return None
