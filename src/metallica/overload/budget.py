"""A retry budget: retries at most ``ratio`` of calls, plus a small floor per second.

Retries are what turns a slow service into a dead one: every caller retrying multiplies the
load just when the service has the least to spare. Like Finagle's ``RetryBudget``, each first
attempt deposits ``ratio`` of a retry; a retry spends one whole. A reserve refilled at
``floor_per_second`` (capped at one second's worth) lets a quiet replica still retry its few
failures. A retry the budget refuses is not failed: the caller parks it for later. Pure: the
clock is a parameter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RetryBudget:
    ratio: float = 0.2
    floor_per_second: float = 5.0
    cap: float = 100.0  # the most retries deposits can save up
    clock: Callable[[], float] = time.monotonic
    earned: float = field(init=False, default=0.0)
    reserve: float = field(init=False)
    _refilled_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.reserve = self.floor_per_second
        self._refilled_at = self.clock()

    def deposit(self) -> None:
        """A first attempt is made."""
        self.earned = min(self.cap, self.earned + self.ratio)

    def try_spend(self) -> bool:
        """Whether a retry may be made now (and if so, it is paid for)."""
        if self.earned >= 1 - 1e-9:  # five deposits of 0.2 make one retry, rounding aside
            self.earned = max(0.0, self.earned - 1)
            return True
        now = self.clock()
        refill = (now - self._refilled_at) * self.floor_per_second
        self.reserve = min(self.floor_per_second, self.reserve + refill)
        self._refilled_at = now
        if self.reserve >= 1:
            self.reserve -= 1
            return True
        return False

    @property
    def available(self) -> float:
        return self.earned + self.reserve
