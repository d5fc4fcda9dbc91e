"""A bounded admission queue that sheds by how long it has stood, not by how long it is.

A command that finds every place under the admission limit taken waits here for one, instead
of being refused at once: a burst that the replica serves in a few hundred milliseconds is
served. What must be refused is a queue that *stands*: arrivals outpacing what the replica
completes, so that waiting only adds latency and never drains. The test is CoDel's (Nichols and
Jacobson, "Controlling Queue Delay", 2012; Facebook's servers and folly's ``Codel`` use it the
same way for requests): not the queue's length, which a burst makes long for a moment, but the
**sojourn**: how long the oldest command waiting has been there, looked at on every arrival,
departure and expiry (CoDel measures it as commands leave; Facebook's servers as the time since
the queue was last empty, which is the same thing seen from the other end, and covers a queue
that nobody leaves). The queue stands once, for a whole ``interval``, the oldest command never
had waited less than ``target``, **and the queue grew meanwhile**.

The second condition is ours, and measured: a closed loop of clients (each waits for its answer
before it sends again) keeps a queue as long as it has clients beyond the limit, for as long as
it runs, but that queue cannot grow; 64 clients on one replica wait about 0.4 s each there,
and refusing them only sends each away for a whole second of ``Retry-After``. An open loop past
capacity grows its queue without end; a burst only shrinks it.

While it stands (Facebook's "Fail at Scale": adaptive LIFO with CoDel's short timeout):

* the **newest** command is served first: it is the one most likely to be answered within its
  client's patience, while the oldest ones have already spent theirs;
* a command waits at most ``overload_timeout`` and is then refused (``codel``), so refusals
  stay fast and the admitted ones wait little.

It stops standing once the queue has stayed empty for an ``interval``: the load has fallen
below what the replica completes (an empty moment between two arrivals of an overload is not
enough: leaving at once would start a first-in-first-out queue again, as slow as before).
Otherwise the queue is first in, first out, each command waiting at most its own deadline (its
``Prefer: wait``, at most ``timeout``), then refused (``queue-timeout``); a queue already
``max_length`` long refuses at once (``backlog-full``).

Pure and synchronous: the clock is a parameter, and the caller drives it (:meth:`offer` when a
command arrives, :meth:`admit_next` when a place frees, :meth:`expire` when the next deadline in
:meth:`next_deadline` comes). Its tickets say what became of each command.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from metallica.config import default

WAITING, ADMITTED, REFUSED, CANCELLED = "waiting", "admitted", "refused", "cancelled"
QUEUE_TIMEOUT, CODEL, BACKLOG_FULL = "queue-timeout", "codel", "backlog-full"


@dataclass(frozen=True)
class QueueSettings:
    """``target`` and ``interval``: CoDel's (seconds); ``timeout``: the longest any command
    waits; ``overload_timeout``: the longest one waits while the queue stands; ``max_length``:
    commands waiting at once. The defaults are measured on this workload: see
    ``bench/README.md``, "Admission queue"."""

    target: float = default("admission-queue-target")
    interval: float = default("admission-queue-interval")
    timeout: float = default("admission-queue-timeout")
    overload_timeout: float = default("admission-queue-overload-timeout")
    max_length: int = default("admission-queue-max")


@dataclass(eq=False)
class Ticket:
    """One command's place in the queue: ``state`` is waiting, admitted, refused or cancelled;
    ``reason`` says why it was refused; ``waited`` how long it queued (set once decided)."""

    arrived: float
    deadline: float
    number: int
    state: str = WAITING
    reason: str | None = None
    waited: float = 0.0
    on_decided: Callable[[Ticket], None] | None = field(default=None, repr=False)

    def _decide(self, state: str, now: float, reason: str | None = None) -> None:
        self.state, self.reason, self.waited = state, reason, max(0.0, now - self.arrived)
        if self.on_decided is not None:
            self.on_decided(self)


@dataclass
class DrainRate:
    """Commands leaving the queue per second (admitted, from the queue or straight through),
    smoothed over about ``horizon`` seconds: what ``Retry-After`` is computed from."""

    horizon: float = 2.0
    rate: float = 0.0
    _since: float | None = None
    _count: int = 0

    def admitted(self, now: float) -> None:
        if self._since is None:
            self._since = now
        self._count += 1
        self.update(now)

    def update(self, now: float) -> None:
        if self._since is None:
            return
        elapsed = now - self._since
        if elapsed < 0.1:  # too short a span to be a rate
            return
        weight = min(1.0, elapsed / self.horizon)
        self.rate += weight * (self._count / elapsed - self.rate)
        self._since, self._count = now, 0


class AdmissionQueue:
    def __init__(
        self, settings: QueueSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._arrivals: deque[Ticket] = deque()  # waiting tickets, oldest first (lazy removal)
        self._deadlines: list[tuple[float, int, Ticket]] = []  # a heap (lazy removal)
        self._numbers = itertools.count()
        self.length = 0  # tickets waiting
        self.drain = DrainRate()
        self._standing = False
        self._empty_since: float | None = None  # while standing: since when nobody waits
        # CoDel's clock: since when every command that left the queue had waited ``target``
        # or more (None: the last one to leave waited less, or the queue emptied), and how
        # many were waiting then.
        self._above_since: float | None = None
        self._length_then = 0

    @property
    def standing(self) -> bool:
        """Whether the queue stands (it sheds): see the module's docstring."""
        empty_since = self._empty_since if self.length == 0 else None
        if empty_since is not None and self._clock() - empty_since >= self.settings.interval:
            self._standing, self._empty_since = False, None
        return self._standing

    # --- what the caller tells it ----------------------------------------------------------

    def offer(self, patience: float) -> Ticket:
        """A command that found no free place: a ticket, waiting, or refused at once when the
        queue is full. ``patience``: how long its client will wait (``Prefer: wait``)."""
        now = self._clock()
        deadline = now + max(0.0, min(patience, self.settings.timeout))
        ticket = Ticket(now, deadline, next(self._numbers))
        if self.length >= self.settings.max_length:
            ticket._decide(REFUSED, now, BACKLOG_FULL)
            return ticket
        if deadline <= now:  # a client that will not wait at all
            ticket._decide(REFUSED, now, QUEUE_TIMEOUT)
            return ticket
        self._arrivals.append(ticket)
        self._empty_since = None
        heapq.heappush(self._deadlines, (deadline, ticket.number, ticket))
        self.length += 1
        self._judge(now)
        return ticket

    def admitted_directly(self) -> None:
        """A command took a free place without queueing (it counts for the drain rate)."""
        self.drain.admitted(self._clock())

    def admit_next(self) -> Ticket | None:
        """A place is free: the ticket that gets it (first in, first out; newest first while
        the queue stands), or None when nobody waits."""
        now = self._clock()
        self._expire(now)
        ticket = self._take_newest() if self.standing else self._take_oldest()
        if ticket is None:
            return None
        self.drain.admitted(now)
        ticket._decide(ADMITTED, now)
        self._after_leaving(now)
        self._judge(now)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Its client went away: it no longer waits."""
        if ticket.state == WAITING:
            self.length -= 1
            ticket._decide(CANCELLED, self._clock())
            self._after_leaving(self._clock())

    def expire(self) -> list[Ticket]:
        """Refuse the tickets whose time is up; return them."""
        return self._expire(self._clock())

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do (clock time), or None."""
        self._drop_decided()
        candidates = []
        if self._deadlines:
            candidates.append(self._deadlines[0][0])
        if self.standing and self._arrivals:
            candidates.append(self._arrivals[0].arrived + self.settings.overload_timeout)
        return min(candidates) if candidates else None

    def retry_after(self) -> float:
        """Seconds until the queue would have drained at the measured rate (for ``Retry-After``,
        which the caller rounds up to whole seconds, at least 1)."""
        self.drain.update(self._clock())
        if self.drain.rate <= 0:
            return 1.0
        return (self.length + 1) / self.drain.rate

    # --- CoDel ------------------------------------------------------------------------------

    def _judge(self, now: float) -> None:
        """CoDel's judgement: the queue stands once the oldest command waiting has waited
        ``target`` or more all through an ``interval``, and the queue grew meanwhile (by more
        than a quarter, and at least 2)."""
        if self._standing:
            return  # only a queue empty for an interval ends it
        self._drop_decided()
        if not self._arrivals or now - self._arrivals[0].arrived < self.settings.target:
            self._above_since = None
        elif self._above_since is None:
            self._above_since, self._length_then = now, self.length
        elif now - self._above_since >= self.settings.interval:
            growth = self.length - self._length_then
            if growth > max(2, self._length_then / 4):
                self._standing = True

    def _after_leaving(self, now: float) -> None:
        if self.length == 0:  # drained: the clock stops; a standing queue starts to end
            self._above_since = None
            if self._standing and self._empty_since is None:
                self._empty_since = now
            self._arrivals.clear()
            self._deadlines.clear()

    # --- the tickets ------------------------------------------------------------------------

    def _expire(self, now: float) -> list[Ticket]:
        self._judge(now)
        refused: list[Ticket] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, ticket = heapq.heappop(self._deadlines)
            if ticket.state == WAITING:
                self.length -= 1
                ticket._decide(REFUSED, now, QUEUE_TIMEOUT)
                refused.append(ticket)
        if self.standing:
            oldest_allowed = now - self.settings.overload_timeout
            while self._arrivals and self._arrivals[0].arrived <= oldest_allowed:
                ticket = self._arrivals.popleft()
                if ticket.state == WAITING:
                    self.length -= 1
                    ticket._decide(REFUSED, now, CODEL)
                    refused.append(ticket)
        if refused:
            self._after_leaving(now)
        return refused

    def _take_oldest(self) -> Ticket | None:
        while self._arrivals:
            ticket = self._arrivals.popleft()
            if ticket.state == WAITING:
                self.length -= 1
                return ticket
        return None

    def _take_newest(self) -> Ticket | None:
        while self._arrivals:
            ticket = self._arrivals.pop()
            if ticket.state == WAITING:
                self.length -= 1
                return ticket
        return None

    def _drop_decided(self) -> None:
        while self._deadlines and self._deadlines[0][2].state != WAITING:
            heapq.heappop(self._deadlines)
        while self._arrivals and self._arrivals[0].state != WAITING:
            self._arrivals.popleft()
