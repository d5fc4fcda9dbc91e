"""One tailer per replica: it follows the log in the database and hands each new event to every
stream this replica serves (fan-out), so that a thousand followers cost one read, not a
thousand polls.

It reads only while someone follows: a stream, or a consumer group's pull that waits for events
(:meth:`LogTailer.watch`: the pull looks again when the tailer saw the log grow, instead of
polling the group's table). It is woken by this replica's own changes (the relay's
records, through :class:`~metallica.protools.watchers.Watchers`), on PostgreSQL by the other
replicas' notifications (``LISTEN``), and otherwise looks every ``poll_interval`` (SQLite,
several processes on one file; a notification connection that was lost). Reads are spaced
``min_interval`` apart at least, so that a busy replica's wake-ups are coalesced into one read
of everything new.

**Announcing.** On PostgreSQL each replica tells the others that the log grew: after its own
changes commit, its announcer sends one ``NOTIFY`` (a short transaction of its own), at most
every ``min_interval``, however many workflows moved meanwhile. A ``NOTIFY`` inside each
appending transaction would be simpler, but PostgreSQL serialises the commits of transactions
that notify (a database-wide lock from their pre-commit to their end), and measured at C=16
that cost 8 % of the hot path's throughput (``bench/README.md``, "The log's positions"). A
change whose announcement is lost (a replica killed between its commit and the next
announcement) reaches the other replicas' followers at their next poll: late, never lost.

Each follower has a bounded buffer: one that does not keep up (``capacity`` events waiting) is
ended with :class:`SlowReader`, never buffered without bound; it resumes from the last position
it received, from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from metallica.protools import store
from metallica.protools.log import EventLog, LogQuery, Reader
from metallica.protools.loops import LoopHealth, keep_running, sleep_unless_woken
from metallica.storage import Database
from metallica.threads import in_thread

logger = logging.getLogger(__name__)

READ_BATCH = 500
# The notification channel of a schema's log: this prefix and the schema's name (the
# announcer's ``pg_notify`` in storage/queries.py).
CHANNEL_PREFIX = "metallica_log_"
# How often the age of the oldest open write transaction is measured (a stall's sign).
STALL_CHECK_SECONDS = 5.0
# How long a follower waits for the tailer's first look at the log.
START_TIMEOUT = 10.0


class FollowEnded(Exception):
    """A follower was ended by the tailer; ``reason`` says why, for the client to read."""

    reason = "ended"


class SlowReader(FollowEnded):
    reason = "slow-reader"


class ShuttingDown(FollowEnded):
    reason = "shutting-down"


class TailerUnavailable(FollowEnded):
    """The tailer did not take a follower in time (its database is unreachable)."""

    reason = "unavailable"


@dataclass(eq=False)
class Follower:
    """One stream's share of the tailer: the events after ``start`` that its query admits, in a
    buffer of at most ``capacity``."""

    query: LogQuery
    reader: Reader
    capacity: int
    start: int
    _buffer: deque[store.LoggedEvent] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _ended: FollowEnded | None = None

    def offer(self, events: list[store.LoggedEvent]) -> None:
        if self._ended is not None:
            return
        self._buffer.extend(e for e in events if self.query.admits(e, self.reader))
        if len(self._buffer) > self.capacity:
            self.end(SlowReader(f"more than {self.capacity} events waited to be sent"))
        elif self._buffer:
            self._ready.set()

    def end(self, why: FollowEnded) -> None:
        self._ended = why
        self._buffer.clear()
        self._ready.set()

    async def next_batch(self, timeout: float) -> list[store.LoggedEvent]:
        """The events waiting (none after ``timeout`` seconds); raises :class:`FollowEnded`
        once the tailer has ended this follower."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        self._ready.clear()
        if self._ended is not None:
            raise self._ended
        batch = list(self._buffer)
        self._buffer.clear()
        return batch


class LogTailer:
    """Follows the log for this replica's streams (see the module's docstring)."""

    def __init__(
        self,
        database: Database,
        log: EventLog,
        *,
        poll_interval: float,
        min_interval: float = 0.02,
        wake: asyncio.Event | None = None,
        grew: asyncio.Event | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.log = log
        self.poll_interval = poll_interval
        self.min_interval = min_interval
        self.wake = wake if wake is not None else asyncio.Event()
        self.position: int | None = None  # the last position handed out (None: not following)
        self.lag_seconds = 0.0
        self.oldest_write_seconds = 0.0
        self._measured_at = -STALL_CHECK_SECONDS
        self.health = LoopHealth("log_tailer")
        self.listener_health = LoopHealth("log_notifications")
        # Set when this replica's changes committed: what the announcer announces.
        self.grew = grew if grew is not None else asyncio.Event()
        self.announcer_health = LoopHealth("log_announcer")
        self._followers: set[Follower] = set()
        # Waiting pulls of consumer groups: each an event set whenever the log may have grown.
        self._watchers: set[asyncio.Event] = set()
        self._positioned = asyncio.Event()
        self._closed = False
        self._clock = clock

    @property
    def followers(self) -> int:
        return len(self._followers)

    @property
    def waiting_pulls(self) -> int:
        return len(self._watchers)

    async def run(self) -> None:
        """Tail the log until cancelled (and, on PostgreSQL, listen for its notifications)."""
        async with asyncio.TaskGroup() as group:
            self.health.task = group.create_task(
                keep_running(self.health, self._step, self._sleep), name="log-tailer"
            )
            if self.database.listens:
                self.listener_health.task = group.create_task(
                    keep_running(self.listener_health, self._listen, asyncio.sleep),
                    name="log-notifications",
                )
                self.announcer_health.task = group.create_task(
                    keep_running(self.announcer_health, self._announce, asyncio.sleep),
                    name="log-announcer",
                )

    async def _sleep(self, delay: float) -> None:
        await asyncio.sleep(self.min_interval)  # coalesce the wake-ups of a busy replica
        await sleep_unless_woken(self.wake, max(0.0, delay - self.min_interval))

    async def _listen(self) -> float:
        """Wake the tailer at each notification of the log, until the connection is lost
        (then the keeper backs off and listens again; the tailer polls meanwhile)."""
        async with self.database.listen(CHANNEL_PREFIX) as notifications:
            self.listener_health.succeeded()
            self.wake.set()  # whatever was missed while not listening
            async for _ in notifications:
                self.wake.set()
        return 0.0

    async def _announce(self) -> float:
        """Once this replica's changes committed, tell the other replicas (one NOTIFY for all
        the changes since the last); then wait ``min_interval`` before the next."""
        await self.grew.wait()
        self.grew.clear()
        await in_thread(self.log.announce)
        return self.min_interval

    async def _step(self) -> float:
        self.wake.clear()
        now = time.monotonic()
        if now - self._measured_at >= STALL_CHECK_SECONDS:
            self._measured_at = now
            self.oldest_write_seconds = await in_thread(self.log.oldest_write)
        if not self._followers and not self._watchers:
            self.position, self.lag_seconds = None, 0.0
            self._positioned.clear()
            return self.poll_interval
        if self.position is None:
            self.position = await in_thread(self.log.head)
            self._positioned.set()
            self.wake_watchers()  # what committed before the tailer stood here: look again
        while True:
            events = await in_thread(self.log.read_after, self.position, READ_BATCH)
            if not events:
                self.lag_seconds = 0.0
                break
            for follower in list(self._followers):
                follower.offer(events)
            self.wake_watchers()
            self.position = events[-1].event.global_position
            self.lag_seconds = max(0.0, self._clock() - events[-1].event.recorded_at)
            if len(events) < READ_BATCH:
                self.lag_seconds = 0.0
                break
        return self.poll_interval

    @contextlib.asynccontextmanager
    async def follow(
        self, query: LogQuery, reader: Reader, capacity: int
    ) -> AsyncIterator[Follower]:
        """A follower, from the tailer's position now, until the block ends."""
        if self._closed:
            raise ShuttingDown("this replica is shutting down")
        follower = Follower(query, reader, capacity, start=-1)
        self._followers.add(follower)
        try:
            self.wake.set()
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    await self._positioned.wait()
            except TimeoutError:
                raise TailerUnavailable(
                    f"this replica could not read the log for {START_TIMEOUT:g} s"
                ) from None
            assert self.position is not None
            follower.start = self.position
            yield follower
        finally:
            self._followers.discard(follower)

    @contextlib.contextmanager
    def watch(self) -> Iterator[asyncio.Event]:
        """For a pull that waits: an event the tailer sets each time the log may have grown
        (new events read, the tailer placed at the head, the replica shutting down), until the
        block ends. Clear it before looking, then wait on it: nothing committed after the look
        goes unannounced once the tailer stands at a position before it."""
        grew = asyncio.Event()
        self._watchers.add(grew)
        self.wake.set()
        try:
            yield grew
        finally:
            self._watchers.discard(grew)

    def wake_watchers(self) -> None:
        """Make every waiting pull look again (a group changed on this replica)."""
        for grew in self._watchers:
            grew.set()

    def close(self) -> None:
        """End every follower (shutting down) and take no new one."""
        self._closed = True
        for follower in list(self._followers):
            follower.end(ShuttingDown("this replica is shutting down"))
        self.wake_watchers()
