"""Flow control at protools: what it admits, and how it spares the services it calls.

**Admission** (:class:`Admission`): a new command is refused fast, before its body is read and
before any database access, when its client exceeds its rate (429) or when this replica is
saturated (503): the workflows it admitted and has not finished are at an adaptive limit (held
near the unloaded latency), or the outbox holds more parked work than ``backlog_max``. Work
already accepted is never refused: its steps go on through the relay; a replay of a key this
replica accepted lately is answered whatever the load (a replay landing on another replica
while that one is saturated is told to come back, with ``Retry-After``); GETs are never shed.
A refusal must cost next to nothing: under twice the capacity, half the requests are refused,
and any work they cost is taken from the accepted ones.

**Downstream guards** (:class:`DownstreamGuard`), one per service called: a circuit breaker
(while open, steps park instead of failing, and resume once a probe succeeds), a concurrency
limit adapting to the service's latency, and a retry budget. :func:`classify` says what an
outcome tells each of them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from metallica.overload.breaker import CircuitBreaker
from metallica.overload.budget import RetryBudget
from metallica.overload.limits import GradientLimit, Limiter
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
    """Every knob of protools' flow control, with its default (the CLI documents each)."""

    admission_limit: int = 64  # most workflows admitted here and not yet finished
    # Fewest: below this many workflows in progress, a replica never refuses one (a client
    # with 16 commands in flight is a modest load, not an overload).
    admission_floor: int = 16
    client_rate: float = 1000.0  # commands per second per client; 0: no limit
    client_burst: float = 2000.0
    backlog_max: int = 10_000  # outbox messages beyond which new commands are refused
    breaker_failures: int = 5  # failures in a row that open a service's circuit
    breaker_open_seconds: float = 1.0  # the first open spell; doubles while probes fail
    # The longest open spell: a service that comes back is called again within about 10 s
    # (DESIGN.md), so no spell may outlast 8 s (the parked steps come back up to 0.5 s later).
    breaker_max_open_seconds: float = 8.0
    retry_budget_ratio: float = 0.2
    retry_budget_floor: float = 5.0  # retries per second always allowed per service
    downstream_limit: int = 128  # the most calls in flight to one service


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


class Admission:
    """New commands in: a rate per client, and an adaptive limit on the workflows this replica
    admitted and has not finished (``try_admit``/``finished``)."""

    def __init__(self, settings: FlowSettings) -> None:
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
        self.backlog_max = settings.backlog_max
        self._recent: OrderedDict[str, None] = OrderedDict()

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

    def try_admit(self, backlog: int) -> str | None:
        """Take a place for a new workflow: None when admitted, else why not."""
        if backlog >= self.backlog_max:
            return "backlog-full"
        if not self.limiter.try_acquire():
            return "overloaded"
        return None

    def finished(self, seconds: float | None) -> None:
        """An admitted workflow left this replica's hands: finished after ``seconds`` (a sample
        for the limit), or handed on (parked, retried later, a replay: ``None``)."""
        self.limiter.release(seconds)
