"""A paced follower (the console's stream) writes at most once per ``pace`` seconds, every
event still going out once, in order: what arrives meanwhile waits in its buffer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

from metallica.protools import stream
from metallica.protools.engine import RecordedEvent
from metallica.protools.log import LogQuery, Reader
from metallica.protools.metrics import ProtoolsMetrics
from metallica.protools.store import LoggedEvent
from metallica.protools.tailer import Follower

EVENTS = 60
EVERY = 0.005  # seconds between two events


class OneFollowerTailer:
    def __init__(self) -> None:
        self.follower: Follower | None = None

    @contextlib.asynccontextmanager
    async def follow(
        self, query: LogQuery, reader: Reader, capacity: int
    ) -> AsyncIterator[Follower]:
        self.follower = Follower(query, reader, capacity, start=0)
        yield self.follower


class Log:
    def entry(self, logged: LoggedEvent) -> dict[str, Any]:
        return {"position": logged.event.global_position}


def logged(position: int) -> LoggedEvent:
    return LoggedEvent(RecordedEvent(position, "wf", position, "E", {}, 0.0), "alice")


async def writes(pace: float) -> list[tuple[float, bytes]]:
    """Each write of the follower, with when it came (the loop's clock)."""
    tailer, chunks = OneFollowerTailer(), []
    clock = asyncio.get_running_loop().time
    follow = stream.follow(
        tailer,  # type: ignore[arg-type]
        Log(),  # type: ignore[arg-type]
        LogQuery(),
        Reader("alice", whole_log=True),
        capacity=1000,
        heartbeat=1.0,
        max_duration=30.0,
        metrics=ProtoolsMetrics(),
        pace=pace,
    )

    async def produce() -> None:
        while tailer.follower is None:
            await asyncio.sleep(0)
        for position in range(1, EVENTS + 1):
            tailer.follower.offer([logged(position)])
            await asyncio.sleep(EVERY)

    producer = asyncio.get_running_loop().create_task(produce())
    async with asyncio.timeout(10):
        async for chunk in follow:
            assert isinstance(chunk, bytes)
            chunks.append((clock(), chunk))
            if f"id: {EVENTS}\r\n".encode() in chunk:
                break
    await producer
    await cast(AsyncGenerator[Any, None], follow).aclose()
    return chunks


def positions(chunks: list[tuple[float, bytes]]) -> list[int]:
    text = b"".join(chunk for _, chunk in chunks).decode()
    return [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]


def test_a_paced_follower_writes_at_most_once_per_pace_and_sends_every_event_once_in_order() -> (
    None
):
    paced = asyncio.run(writes(pace=0.1))
    assert positions(paced) == list(range(1, EVENTS + 1))
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(paced)]
    assert gaps
    assert min(gaps) >= 0.1 - 0.005, gaps  # the loop's timers may fire a little early


def test_an_unpaced_follower_sends_the_same_events() -> None:
    assert positions(asyncio.run(writes(pace=0.0))) == list(range(1, EVENTS + 1))
