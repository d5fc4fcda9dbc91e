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
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator
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


def _message(log: EventLog, logged: store.LoggedEvent) -> ServerSentEvent:
    entry = log.entry(logged)
    return ServerSentEvent(data=_json(entry), id=str(entry["position"]))


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
) -> AsyncIterator[ServerSentEvent]:
    """The events after ``query.after`` that ``query`` admits for ``reader``, live, until the
    client leaves, the tailer ends this follower or ``max_duration`` seconds have passed (see
    the module's docstring)."""
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
                for logged in page.events:
                    yield _message(log, logged)
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
                for logged in batch:
                    if logged.event.global_position > sent:
                        yield _message(log, logged)
                        sent = logged.event.global_position
    finally:
        metrics.followers_ended.labels(reason).inc()
