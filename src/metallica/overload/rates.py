"""Per-client rate limits: a token bucket per client, ``rate`` per second up to ``burst``.

:meth:`ClientRates.take` answers 0 when the client may go on, or how many seconds until it may
(the ``Retry-After`` of a 429). Buckets of clients not seen for a while are forgotten, so a
stream of one-off clients does not grow memory without bound. Pure: the clock is a parameter.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class ClientRates:
    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst = rate, burst
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, client: str) -> float:
        """Spend one token of ``client``'s bucket: 0.0 if it had one, else the seconds until
        it will have one (nothing is spent)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.pop(client, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        self._buckets[client] = bucket  # most recently seen last
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


def retry_after_seconds(seconds: float) -> int:
    """``Retry-After`` in whole seconds (its only portable form), at least 1: the header and
    the problem's ``retry_after`` member (an integer, as the OpenAPI documents say)."""
    return max(1, math.ceil(seconds))
