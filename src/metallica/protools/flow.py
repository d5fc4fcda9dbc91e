"""Flow control at protools: what it admits, and how it spares the services it calls.

**Admission** (:class:`Admission`): an adaptive limit sets how many workflows admitted here may
be in progress at once (held near the unloaded latency of this replica's own work); a bounded
queue (:mod:`metallica.overload.queue`) decides who waits for a place and who is refused. A new
command that finds no free place waits in the queue, so a burst the replica serves in a moment
is served; the queue refuses only what its CoDel judgement calls a standing queue, or a command
that waited out its own ``Prefer: wait``. Every refusal comes before the command's body is read
and before any database access: its client's rate (429, at once, never queued), an outbox
holding more parked work than ``backlog_max`` (503, at once), a queue that is full, stands, or
outlasted the command's patience (503). Each 503 carries a ``Retry-After`` computed from the
rate at which the queue drains. Work already accepted is never refused: its steps go on through
the relay; a replay of a key this replica accepted lately skips the queue (it is a read); GETs
are never shed. A refusal must cost next to nothing: under twice the capacity, half the
requests are refused, and any work they cost is taken from the accepted ones.

**Downstream guards** (:class:`DownstreamGuard`), one per service called: a circuit breaker
(while open, steps park instead of failing, and resume once a probe succeeds), a concurrency
limit adapting to the service's latency, and a retry budget. :func:`classify` says what an
outcome tells each of them.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metallica.config import default, value
from metallica.overload.breaker import CircuitBreaker
from metallica.overload.budget import RetryBudget
from metallica.overload.limits import GradientLimit, Limiter
from metallica.overload.queue import (
    ADMITTED,
    BACKLOG_FULL,
    WAITING,
    AdmissionQueue,
    QueueSettings,
    Ticket,
)
from metallica.overload.rates import ClientRates
from metallica.protools.engine import Outcome, Retry

# Retry reasons that say the service is unwell (the breaker counts them), or overloaded (the
# adaptive limit backs off; the breaker does not open for a service that answers "not now").
UNWELL = frozenset(
    {"connect-timeout", "connection-refused", "timeout", "reset", "network-error"}
    | {"unavailable", "server-error"}
)
OVERLOADED = frozenset({"overloaded"})
HEALTHY, SICK, BUSY = "healthy", "unwell", "overloaded"
# Keys of the commands a replica accepted lately: their replays skip admission without a read.
RECENT_KEYS = 100_000


def classify(outcome: Outcome) -> str:
    """What an attempt's outcome says about the service: it answered (``healthy``, even with a
    refusal), it is ``unwell`` (down, timing out, failing), or ``overloaded`` (it said so)."""
    if not isinstance(outcome, Retry):
        return HEALTHY
    if outcome.reason in UNWELL:
        return SICK
    if outcome.reason in OVERLOADED:
        return BUSY
    return HEALTHY


@dataclass(frozen=True)
class FlowSettings:
    """Every knob of protools' flow control (defaults and help: :mod:`metallica.config`)."""

    admission_limit: int = default("admission-limit")  # most admitted and not yet finished
    # The fewest places the adaptive limit keeps. It was 16, so that a closed loop of 16
    # clients was never refused; now such clients wait in the queue, and the limit may hold
    # the latency of the admitted work near the unloaded one (measured: bench/README.md).
    admission_floor: int = default("admission-floor")
    client_rate: float = default("client-rate")  # commands per second per client; 0: no limit
    client_burst: float = default("client-burst")
    backlog_max: int = default("backlog-max")  # outbox messages beyond which commands wait
    queue: QueueSettings = field(default_factory=QueueSettings)  # who waits for a place
    breaker_failures: int = default("breaker-failures")  # failures in a row that open it
    breaker_open_seconds: float = default("breaker-open-seconds")  # doubles while probes fail
    # The longest open spell: a service that comes back is called again within about 10 s
    # (DESIGN.md), so no spell may outlast 8 s (the parked steps come back up to 0.5 s later).
    breaker_max_open_seconds: float = 8.0
    retry_budget_ratio: float = default("retry-budget-ratio")
    retry_budget_floor: float = default("retry-budget-floor")  # per second, always allowed
    downstream_limit: int = default("downstream-limit")  # most calls in flight to a service

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FlowSettings:
        """From configuration values (a value missing takes its default)."""
        return cls(
            admission_limit=value(options, "admission-limit"),
            admission_floor=value(options, "admission-floor"),
            client_rate=value(options, "client-rate"),
            client_burst=value(options, "client-burst"),
            backlog_max=value(options, "backlog-max"),
            queue=QueueSettings(
                target=value(options, "admission-queue-target"),
                interval=value(options, "admission-queue-interval"),
                timeout=value(options, "admission-queue-timeout"),
                overload_timeout=value(options, "admission-queue-overload-timeout"),
                max_length=value(options, "admission-queue-max"),
            ),
            breaker_failures=value(options, "breaker-failures"),
            breaker_open_seconds=value(options, "breaker-open-seconds"),
            retry_budget_ratio=value(options, "retry-budget-ratio"),
            retry_budget_floor=value(options, "retry-budget-floor"),
            downstream_limit=value(options, "downstream-limit"),
        )


@dataclass
class DownstreamGuard:
    """What protects one service from this replica."""

    name: str
    breaker: CircuitBreaker
    limiter: Limiter
    budget: RetryBudget

    @classmethod
    def create(cls, name: str, settings: FlowSettings) -> DownstreamGuard:
        return cls(
            name,
            CircuitBreaker(
                name,
                failure_threshold=settings.breaker_failures,
                open_seconds=settings.breaker_open_seconds,
                max_open_seconds=settings.breaker_max_open_seconds,
            ),
            Limiter(
                GradientLimit(
                    initial=min(32, settings.downstream_limit),
                    # concurrency-limits' own floor: a service that is merely slow (a long
                    # wire, not a queue) still gets 20 calls at a time from each replica.
                    minimum=min(20, settings.downstream_limit),
                    maximum=settings.downstream_limit,
                )
            ),
            RetryBudget(settings.retry_budget_ratio, settings.retry_budget_floor),
        )

    def learn(self, outcome: Outcome, rtt: float) -> None:
        """Give back the call's permit and tell the breaker and the limit what it showed."""
        kind = classify(outcome)
        self.limiter.release(rtt, dropped=kind != HEALTHY)
        if kind == SICK:
            self.breaker.failed()
        elif kind == HEALTHY:
            self.breaker.succeeded()
        else:
            self.breaker.abandoned()  # an overloaded answer proves it is up, not that it copes


@dataclass(frozen=True)
class Admitted:
    """What admission decided for a new command: ``refusal`` is None when it may start (its
    place is then taken, and given back by :meth:`Admission.finished`), else why not;
    ``queued``: the seconds it waited for a place; ``retry_after``: when a refused one may
    come back (seconds, from the rate at which the queue drains)."""

    refusal: str | None
    queued: float = 0.0
    retry_after: float = 1.0


class Admission:
    """New commands in: a rate per client; an adaptive limit on the workflows this replica
    admitted and has not finished; a queue for those that find no free place
    (:meth:`admit`, then :meth:`finished` when the workflow leaves this replica's hands)."""

    def __init__(
        self, settings: FlowSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rates = ClientRates(settings.client_rate, settings.client_burst)
        self.limiter = Limiter(
            GradientLimit(
                initial=min(settings.admission_floor, settings.admission_limit),
                minimum=min(settings.admission_floor, settings.admission_limit),
                maximum=settings.admission_limit,
                tolerance=2.0,
                long_window=500,
                baseline="minimum",  # hold admitted latency near the unloaded one
            )
        )
        self.queue = AdmissionQueue(settings.queue, clock=clock)
        self.backlog_max = settings.backlog_max
        self._clock = clock
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        # Told of every command the queue decided (admitted, refused, gone): for the metrics.
        self.on_decided: Callable[[Ticket], None] | None = None

    def rate_wait(self, client: str) -> float:
        """0 if ``client`` may send a command now, else the seconds until it may."""
        return self.rates.take(client)

    def remember(self, key: str) -> None:
        """``key`` started a workflow here: a replay of it is answered even when saturated."""
        self._recent[key] = None
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT_KEYS:
            self._recent.popitem(last=False)

    def knows(self, key: str) -> bool:
        return key in self._recent

    async def admit(self, backlog: int, patience: float) -> Admitted:
        """Take a place for a new command, waiting for one in the queue if none is free, at
        most ``patience`` seconds (its ``Prefer: wait``) and as long as the queue allows."""
        if backlog >= self.backlog_max:
            return Admitted(BACKLOG_FULL, retry_after=self.queue.retry_after())
        if self.queue.length == 0 and self.limiter.try_acquire():
            self.queue.admitted_directly()
            return Admitted(None)
        ticket = self.queue.offer(patience)
        if ticket.state == WAITING:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def wake(_: Ticket) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            ticket.on_decided = wake
            self._grant()  # a place may have freed since (a limit that grew)
            try:
                await waiter
            except asyncio.CancelledError:  # its client went away
                if ticket.state == ADMITTED:
                    self.finished(None)
                else:
                    self.queue.cancel(ticket)
                    self._arm()
                    if self.on_decided is not None:
                        self.on_decided(ticket)
                raise
        if self.on_decided is not None:
            self.on_decided(ticket)
        if ticket.state == ADMITTED:
            return Admitted(None, ticket.waited)
        return Admitted(ticket.reason, ticket.waited, self.queue.retry_after())

    def finished(self, seconds: float | None) -> None:
        """An admitted workflow left this replica's hands: finished after ``seconds`` (a sample
        for the limit), or handed on (parked, retried later, a replay: ``None``). Its place
        goes to the queue's next command."""
        self.limiter.release(seconds)
        self._grant()

    def _grant(self) -> None:
        """Give the free places to the queue's next commands, then time the next expiry."""
        while self.queue.length and self.limiter.try_acquire():
            if self.queue.admit_next() is None:
                self.limiter.release(None)
                break
        self._arm()

    def _arm(self) -> None:
        """Have :meth:`_expire` called when the queue's next deadline comes (one timer)."""
        due = self.queue.next_deadline()
        if due is not None and self._timer_due is not None and self._timer_due <= due:
            return  # the timer set goes off first: it re-arms then
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_due = None, None
        if due is not None:
            delay = max(0.0, due - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._expire)
            self._timer_due = due

    def _expire(self) -> None:
        self._timer, self._timer_due = None, None
        self.queue.expire()
        self._grant()
