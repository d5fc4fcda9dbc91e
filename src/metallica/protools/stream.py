"""The log, followed live: what ``GET /v1/events/stream`` sends, as Server-Sent Events.

A follower joins this replica's tailer first (from then on, new events wait in its buffer),
then catches up from the database, a page at a time, from where it asked to start (``after``,
or the ``Last-Event-ID`` its client resumes with) to the tailer's position when it joined, and
then sends what the tailer hands it. Every event goes out once, in log order: its ``id`` is
its position, and nothing at or below the last position sent is sent again (the catch-up and
the buffer may overlap by a few events).

A follower that the tailer ends (a slow reader whose buffer overflowed, a replica shutting
down), or that has been connected for ``max_duration`` seconds, gets a last event, ``end``,
whose data says why (``slow-reader``, ``shutting-down``, ``max-duration``) and the position to
resume after: its client reconnects with that as ``Last-Event-ID`` (a browser's
``EventSource`` does so by itself) and catches up from the database. Rotating long connections
(as the Mercure hub's ``write_timeout`` does) spreads followers over replicas started since
and keeps them clear of the limits of proxies on the way.

**What a follower costs.** Every follower of a replica is sent the same bytes for an event
(what a reader may see changes which events it gets, never how one reads), so each event is
encoded once, for all of them (:func:`_wire`), and a batch the tailer hands over goes out as one
write. With an event encoded per follower and written one by one through the HTTP stack, five
consoles following the whole log cost protools 1.7 ms of CPU per workflow at C=16, a fifth of
its throughput (``bench/README.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from typing import Any

from sse_starlette import ServerSentEvent

from metallica.protools import store
from metallica.protools.log import EventLog, LogQuery, Reader
from metallica.protools.metrics import ProtoolsMetrics
from metallica.protools.tailer import (
    FollowEnded,
    LogTailer,
    ShuttingDown,
    SlowReader,
    TailerUnavailable,
)
from metallica.threads import in_thread

CATCH_UP_PAGE = 500
END_EVENT = "end"
MAX_DURATION = "max-duration"
END_REASONS = (SlowReader.reason, ShuttingDown.reason, TailerUnavailable.reason, MAX_DURATION)


WIRE_CACHE = 4096  # recent events' encodings kept per log: a tailer's batches and buffers
_encodings: weakref.WeakKeyDictionary[EventLog, OrderedDict[int, bytes]] = (
    weakref.WeakKeyDictionary()
)


def _wire(log: EventLog, logged: store.LoggedEvent) -> bytes:
    """``logged`` as a Server-Sent Event, encoded once for every follower of ``log``."""
    position = logged.event.global_position
    cache = _encodings.setdefault(log, OrderedDict())
    encoded = cache.get(position)
    if encoded is None:
        entry = log.entry(logged)
        encoded = ServerSentEvent(data=_json(entry), id=str(position)).encode()
        cache[position] = encoded
        if len(cache) > WIRE_CACHE:
            cache.popitem(last=False)
    return encoded


def _messages(log: EventLog, events: Iterable[store.LoggedEvent]) -> bytes:
    """Several events in one chunk: one write through the HTTP stack for a batch."""
    return b"".join(_wire(log, logged) for logged in events)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def follow(
    tailer: LogTailer,
    log: EventLog,
    query: LogQuery,
    reader: Reader,
    *,
    capacity: int,
    heartbeat: float,
    max_duration: float,
    metrics: ProtoolsMetrics,
    pace: float = 0.0,
) -> AsyncIterator[ServerSentEvent | bytes]:
    """The events after ``query.after`` that ``query`` admits for ``reader``, live, until the
    client leaves, the tailer ends this follower or ``max_duration`` seconds have passed (see
    the module's docstring). ``pace``: the least seconds between two writes; what comes
    meanwhile waits in the follower's buffer and goes out in the next write (a person's
    console needs no more than a few updates a second)."""
    sent = query.after
    reason = "client-left"
    ends_at = time.monotonic() + max_duration

    def end(why: str, detail: str) -> ServerSentEvent:
        nonlocal reason
        reason = why
        data = {"reason": why, "detail": detail, "resume_after": sent}
        return ServerSentEvent(data=_json(data), event=END_EVENT)

    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                follower = await stack.enter_async_context(tailer.follow(query, reader, capacity))
            except FollowEnded as ended:  # shutting down, or the tailer cannot read
                yield end(ended.reason, str(ended))
                return
            while sent < follower.start:  # catch up from the database
                page = await in_thread(
                    log.page,
                    dataclasses.replace(query, after=sent, limit=CATCH_UP_PAGE),
                    reader,
                    until=follower.start,
                )
                if page.events:
                    yield _messages(log, page.events)
                sent = max(sent, page.next)
            while True:  # then live
                left = ends_at - time.monotonic()
                if left <= 0:
                    yield end(MAX_DURATION, f"streams last {max_duration:g} s: resume")
                    return
                try:
                    batch = await follower.next_batch(min(heartbeat, left))
                except FollowEnded as ended:
                    yield end(ended.reason, str(ended))
                    return
                fresh = [logged for logged in batch if logged.event.global_position > sent]
                if fresh:
                    yield _messages(log, fresh)
                    sent = fresh[-1].event.global_position
                    if pace > 0:
                        await asyncio.sleep(min(pace, max(0.0, ends_at - time.monotonic())))
    finally:
        metrics.followers_ended.labels(reason).inc()
