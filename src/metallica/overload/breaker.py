"""A circuit breaker per downstream service: closed, open, half-open.

Closed: calls go through; ``failure_threshold`` failures in a row (the service unreachable,
timing out or refusing for overload) open it. Open: no call goes through until ``open_seconds``
have passed; callers park their work until :meth:`CircuitBreaker.opens_again_in` says. Then
half-open: one probe at a time goes through; a success closes the breaker, a failure opens it
again, for twice as long each time (up to ``max_open_seconds``), so a service that stays down
is probed less and less often. Pure: the clock is a parameter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # for a metrics gauge


@dataclass
class CircuitBreaker:
    name: str
    failure_threshold: int = 5
    open_seconds: float = 1.0
    max_open_seconds: float = 8.0
    clock: Callable[[], float] = time.monotonic
    failures: int = field(init=False, default=0)
    opened_at: float | None = field(init=False, default=None)
    open_for: float = field(init=False, default=0.0)
    probing: bool = field(init=False, default=False)
    on_change: Callable[[str, str], None] | None = None  # (breaker name, new state)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        return OPEN if self.clock() < self.opened_at + self.open_for else HALF_OPEN

    def opens_again_in(self) -> float:
        """Seconds until the next probe may go (0 when calls may go now)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.open_for - self.clock())

    def allow(self) -> bool:
        """Whether a call may go now. In half-open, only one probe at a time: the caller that
        gets True must report its outcome (:meth:`succeeded`, :meth:`failed` or
        :meth:`abandoned`)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures, self.probing = 0, False
        if self.opened_at is not None:
            self.opened_at, self.open_for = None, 0.0
            self._changed(CLOSED)

    def failed(self) -> None:
        """A call failed in a way that says the service is unwell (not a definite answer)."""
        self.failures += 1
        if self.opened_at is not None and self.state == HALF_OPEN:
            self.probing = False
            self._open(min(self.max_open_seconds, self.open_for * 2))
        elif self.opened_at is None and self.failures >= self.failure_threshold:
            self._open(self.open_seconds)

    def abandoned(self) -> None:
        """A probe that was allowed but never made (parked for another reason)."""
        self.probing = False

    def _open(self, seconds: float) -> None:
        self.opened_at, self.open_for = self.clock(), seconds
        self._changed(OPEN)

    def _changed(self, state: str) -> None:
        if self.on_change is not None:
            self.on_change(self.name, state)
