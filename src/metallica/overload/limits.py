"""A concurrency limit that adapts to observed latency, and a limiter that enforces it.

The algorithm is Netflix concurrency-limits' ``Gradient2Limit`` (read there before writing this
one): it compares a short-term round-trip time (the last sample) with a long-term exponential
average of it. While latency holds steady the ratio is 1 and the limit grows by a small queue
allowance; when latency rises (a queue forms downstream) the ratio falls below 1 and the limit
shrinks in proportion, never by more than half in one step. ``tolerance`` is how much latency
may grow before the limit shrinks. The limit grows only while it is in use (``in_flight`` at
least half of it), so an idle period does not leave a huge limit behind. A call that ended in a
drop (a timeout, an overload refusal, an unreachable service) multiplies the limit by
``backoff``, as concurrency-limits' ``AIMDLimit`` does: its latency measures nothing.

Pure and synchronous: the clock is the caller's, and nothing here awaits, except
:meth:`Limiter.acquire`, which waits for a permit.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field


@dataclass
class GradientLimit:
    """The limit itself: fed one sample per completed call, read as :attr:`limit`."""

    initial: float = 20.0
    minimum: int = 4
    maximum: int = 200
    tolerance: float = 1.5
    smoothing: float = 0.2
    long_window: int = 600  # samples in the long-term measure
    warmup: int = 10  # samples averaged plainly before the exponential average starts
    backoff: float = 0.9  # what a drop multiplies the limit by
    # "average": the long-term RTT is an exponential average (Gradient2: it follows a lasting
    # change of latency); "minimum": the lowest RTT of the last one or two windows (Vegas's
    # no-load RTT: latency is held near what the service does unloaded, however long the load).
    baseline: str = "average"
    estimate: float = field(init=False)
    long_rtt: float = field(init=False, default=0.0)
    samples: int = field(init=False, default=0)
    _window_min: float = field(init=False, default=math.inf)
    _previous_min: float = field(init=False, default=math.inf)

    def __post_init__(self) -> None:
        self.estimate = float(min(max(self.initial, self.minimum), self.maximum))

    @property
    def limit(self) -> int:
        return int(self.estimate)

    def update(self, rtt: float, in_flight: int, *, dropped: bool = False) -> int:
        """Take one sample: a call took ``rtt`` seconds with ``in_flight`` calls under way
        (itself included). Returns the new limit."""
        if dropped:  # the latency of a failed call says nothing: back off, as AIMD does
            self.estimate = max(float(self.minimum), self.estimate * self.backoff)
            return self.limit
        short_rtt = max(rtt, 1e-6)
        if self.baseline == "minimum":
            long_rtt = self._minimum(short_rtt)
        else:
            long_rtt = self._average(short_rtt)
            if long_rtt / short_rtt > 2:  # latency is back to normal after a long bad spell
                self.long_rtt = long_rtt = long_rtt * 0.95
        if in_flight < self.estimate / 2 and not dropped:
            return self.limit  # not using what it has: no reason to grow (or to shrink)
        gradient = max(0.5, min(1.0, self.tolerance * long_rtt / short_rtt))
        queue = math.sqrt(self.estimate)
        target = self.estimate * gradient + queue
        smoothed = self.estimate * (1 - self.smoothing) + target * self.smoothing
        self.estimate = min(float(self.maximum), max(float(self.minimum), smoothed))
        return self.limit

    def _minimum(self, rtt: float) -> float:
        self.samples += 1
        self._window_min = min(self._window_min, rtt)
        if self.samples % self.long_window == 0:  # a new window: forget the one before last
            self._previous_min, self._window_min = self._window_min, math.inf
        self.long_rtt = min(self._previous_min, self._window_min)
        return self.long_rtt

    def _average(self, rtt: float) -> float:
        self.samples += 1
        if self.samples <= self.warmup:
            self.long_rtt += (rtt - self.long_rtt) / self.samples
        else:
            factor = 2 / (self.long_window + 1)
            self.long_rtt = self.long_rtt * (1 - factor) + rtt * factor
        return self.long_rtt


class Limiter:
    """Permits under a :class:`GradientLimit`: ``try_acquire`` refuses at once when the limit is
    reached (admission); ``acquire`` waits, first come first served, up to a timeout (a relay's
    call to a service). Each permit is given back with the call's latency, which adapts the
    limit."""

    def __init__(self, limit: GradientLimit) -> None:
        self.algorithm = limit
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self.algorithm.limit

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit or self._waiters:
            return False
        self.in_flight += 1
        return True

    async def acquire(self, timeout: float) -> bool:
        """A permit, waiting at most ``timeout`` seconds for one; False if none came."""
        if self.try_acquire():
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result, and
            # loses the cancellation, when both come at once (fixed in 3.12).
            async with asyncio.timeout(timeout):
                await asyncio.shield(waiter)
            return True
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return True  # granted just as the wait ran out: keep it
            waiter.cancel()
            return False
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(None)  # granted, but its caller is gone: give it back
            else:
                waiter.cancel()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self, rtt: float | None, *, dropped: bool = False) -> None:
        """Give a permit back; ``rtt``: how long the call took (None: no sample, e.g. the call
        was never made)."""
        if rtt is not None:
            self.algorithm.update(rtt, self.in_flight, dropped=dropped)
        self.in_flight -= 1
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)
