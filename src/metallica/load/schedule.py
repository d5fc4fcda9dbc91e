"""When an open loop's commands are due: phases of arrival rates, and Poisson arrival times.

An open loop models clients who do not wait for each other: arrivals follow a Poisson process,
so the gaps between them are exponential and bursts happen as they do in real traffic (a fixed
gap would hide the queueing a burst causes). A run is a list of :class:`Phase` s, each a rate (or
a linear ramp between two rates) held for some seconds: ``400x30,100x20`` is 400/s for 30 s then
100/s for 20 s, the overload scenario "recovery"; ``100:400x30`` ramps from 100/s to 400/s.

Arrival times come from :func:`arrivals`, lazily (a long run never holds its schedule in
memory), and from a seeded :class:`random.Random`, so a run can be replayed. A ramp is drawn by
thinning (Lewis and Shedler): candidates at the phase's peak rate, each kept with probability
rate(t) / peak, which is exact for any rate that varies within a phase.

Everything is bounded (:data:`MAX_RATE`, :data:`MAX_SECONDS`, :data:`MAX_ARRIVALS`): a load
generator must not be the thing that takes a machine down by a typo.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAX_RATE = 5000.0  # arrivals per second in any phase
MAX_SECONDS = 3600.0  # a run's whole schedule
MAX_ARRIVALS = 1_000_000  # a run's arrivals, whatever the rates say

_PHASE = re.compile(
    r"^\s*(?P<start>\d+(?:\.\d+)?)(?::(?P<end>\d+(?:\.\d+)?))?\s*x\s*(?P<seconds>\d+(?:\.\d+)?)\s*$"
)


@dataclass(frozen=True)
class Phase:
    """``start_rate`` arrivals/s rising (or falling) linearly to ``end_rate`` over ``seconds``."""

    start_rate: float
    end_rate: float
    seconds: float

    @classmethod
    def constant(cls, rate: float, seconds: float) -> Phase:
        return cls(rate, rate, seconds)

    def rate_at(self, offset: float) -> float:
        """The arrival rate ``offset`` seconds into the phase."""
        if self.seconds <= 0:
            return self.start_rate
        share = min(max(offset / self.seconds, 0.0), 1.0)
        return self.start_rate + (self.end_rate - self.start_rate) * share

    @property
    def expected_arrivals(self) -> float:
        return (self.start_rate + self.end_rate) / 2 * self.seconds

    def __str__(self) -> str:
        rate = (
            f"{self.start_rate:g}"
            if self.start_rate == self.end_rate
            else f"{self.start_rate:g}:{self.end_rate:g}"
        )
        return f"{rate}x{self.seconds:g}"


def parse_phases(text: str) -> list[Phase]:
    """``RATE x SECONDS`` or ``FROM:TO x SECONDS``, comma-separated; a ValueError says why not."""
    phases = []
    for part in text.split(","):
        match = _PHASE.match(part)
        if match is None:
            raise ValueError(
                f"{part.strip()!r} is not RATExSECONDS or FROM:TOxSECONDS (e.g. 400x30,100:200x20)"
            )
        start = float(match["start"])
        end = float(match["end"]) if match["end"] is not None else start
        phases.append(Phase(start, end, float(match["seconds"])))
    validate(phases)
    return phases


def parse_ramp(text: str, seconds: float) -> Phase:
    """``FROM:TO`` over ``seconds``."""
    start, separator, end = text.partition(":")
    try:
        if not separator:
            raise ValueError
        phase = Phase(float(start), float(end), seconds)
    except ValueError:
        raise ValueError(f"{text!r} is not FROM:TO (arrivals per second, e.g. 100:400)") from None
    validate([phase])
    return phase


def validate(phases: Sequence[Phase]) -> None:
    """Refuse a schedule that is empty, negative, not finite, or beyond the caps."""
    if not phases:
        raise ValueError("no phase to run")
    for phase in phases:
        values = (phase.start_rate, phase.end_rate, phase.seconds)
        if not all(math.isfinite(value) and value >= 0 for value in values):
            raise ValueError(f"phase {phase}: rates and seconds are finite and not negative")
        if phase.seconds <= 0:
            raise ValueError(f"phase {phase}: a phase lasts more than 0 seconds")
        if max(phase.start_rate, phase.end_rate) > MAX_RATE:
            raise ValueError(f"phase {phase}: at most {MAX_RATE:g} arrivals per second")
    if total_seconds(phases) > MAX_SECONDS:
        raise ValueError(f"the phases last more than {MAX_SECONDS:g} s")


def total_seconds(phases: Sequence[Phase]) -> float:
    return sum(phase.seconds for phase in phases)


def rate_at(phases: Sequence[Phase], offset: float) -> float:
    """The arrival rate ``offset`` seconds into the whole schedule (0 past its end)."""
    begin = 0.0
    for phase in phases:
        if offset < begin + phase.seconds:
            return phase.rate_at(offset - begin)
        begin += phase.seconds
    return 0.0


def arrivals(
    phases: Sequence[Phase], rng: random.Random, *, limit: int = MAX_ARRIVALS
) -> Iterator[float]:
    """Arrival times, seconds from the start of the schedule, increasing; at most ``limit``.

    A new phase starts its own draws at its boundary: exponential gaps are memoryless, so
    this is still one Poisson process whose rate changes there.
    """
    validate(phases)
    count, begin = 0, 0.0
    for phase in phases:
        peak = max(phase.start_rate, phase.end_rate)
        offset = 0.0
        while peak > 0 and count < limit:
            offset += rng.expovariate(peak)
            if offset >= phase.seconds:
                break
            if phase.start_rate == phase.end_rate or rng.random() * peak < phase.rate_at(offset):
                count += 1
                yield begin + offset
        begin += phase.seconds
