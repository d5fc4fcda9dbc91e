"""The sustainable rate C of a stack: the highest arrival rate it serves within a latency bound.

A probe is a short open loop at one constant rate (:func:`metallica.load.openloop.run_open_loop`)
followed by a drain (:func:`~metallica.load.openloop.settle`), so one probe's backlog does not
weigh on the next. It *passes* when the admitted p99 stays within the bound and fewer than 1 % of
the arrivals were shed (429/503), and fewer than 1 % ended in an error or were still running when
the wait ended: a server that fails fast would otherwise pass on latency.

The search (:func:`search_capacity`, pure but for the probe it is given) grows the rate
geometrically from a start until a probe fails (or halves it until one passes, when the start
already fails), then bisects between the last pass and the first failure a few times. C is the
highest rate that passed. On a shared machine a single probe is noisy: C is a measurement of the
moment, to read beside the probes that led to it.

The API, for ``metallica bench --capacity`` and the overload scenarios (which run 2 C and then
0.5 C)::

    found = await find_capacity(urls, token, p99_bound=0.100, step_seconds=5, prefix="cap1")
    found.capacity          # arrivals/s, e.g. 240.0
    found.probes            # every probe: rate, passed, admitted p99, shed and error fractions
    found.records           # every command sent, for the checker
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from metallica.load.openloop import LiveStatus, run_open_loop, settle
from metallica.load.records import ClientRecord
from metallica.load.schedule import MAX_RATE, Phase

MAX_PROBES = 30
SHED_LIMIT = 0.01  # fraction of arrivals shed that fails a probe
ERROR_LIMIT = 0.01  # fraction of arrivals in error, or still running, that fails a probe


@dataclass(frozen=True)
class Verdict:
    """What one probe at ``rate`` found."""

    rate: float
    passed: bool
    p99_ms: float | None  # admitted
    shed_fraction: float
    error_fraction: float
    summary: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def reason(self) -> str:
        """Why it failed ("" when it passed)."""
        if self.passed:
            return ""
        reasons = []
        if self.p99_ms is None:
            reasons.append("nothing admitted")
        if self.shed_fraction >= SHED_LIMIT:
            reasons.append(f"{self.shed_fraction:.1%} shed")
        if self.error_fraction >= ERROR_LIMIT:
            reasons.append(f"{self.error_fraction:.1%} errors or unfinished")
        return ", ".join(reasons) or "p99 over the bound"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "passed": self.passed,
            "p99_ms": self.p99_ms,
            "shed_fraction": self.shed_fraction,
            "error_fraction": self.error_fraction,
            "reason": self.reason,
            "summary": self.summary,
        }


def judge(rate: float, summary: dict[str, Any], *, p99_bound: float) -> Verdict:
    """The verdict on a probe at ``rate`` from its open loop's summary (see the module)."""
    arrivals = summary["arrivals"]
    outcomes = summary["outcomes"]
    unfinished = outcomes["error"] + outcomes["failed"] + outcomes["pending"]
    shed = summary["rejected"] / arrivals if arrivals else 0.0
    errors = unfinished / arrivals if arrivals else 0.0
    p99_ms = summary["admitted_latency"]["p99_ms"]
    passed = (
        arrivals > 0
        and p99_ms is not None
        and p99_ms <= p99_bound * 1000
        and shed < SHED_LIMIT
        and errors < ERROR_LIMIT
    )
    return Verdict(rate, passed, p99_ms, round(shed, 4), round(errors, 4), summary)


Probe = Callable[[float], Awaitable[Verdict]]


async def search_capacity(
    probe: Probe,
    *,
    start_rate: float,
    growth: float = 2.0,
    bisections: int = 3,
    max_rate: float = 2000.0,
    min_rate: float = 1.0,
) -> tuple[float, list[Verdict]]:
    """The highest rate ``probe`` passes, and every verdict on the way (at most
    :data:`MAX_PROBES` probes; 0.0 when even ``min_rate`` fails; ``max_rate`` when it passes)."""
    if not (growth > 1 and 0 < min_rate <= start_rate <= max_rate <= MAX_RATE):
        raise ValueError("need growth > 1 and 0 < min_rate <= start_rate <= max_rate <= MAX_RATE")
    verdicts: list[Verdict] = []

    async def passes(rate: float) -> bool:
        verdict = await probe(rate)
        verdicts.append(verdict)
        return verdict.passed

    good, bad = 0.0, None
    rate = start_rate
    for _ in itertools.repeat(None, MAX_PROBES):  # up, until a probe fails
        if await passes(rate):
            good = rate
            if rate >= max_rate:
                return good, verdicts
            rate = min(max_rate, _rounded(rate * growth))
        else:
            bad = rate
            break
    if bad is None:
        return good, verdicts
    while good == 0.0 and len(verdicts) < MAX_PROBES:  # down, when the start already failed
        rate = _rounded(rate / growth)
        if rate < min_rate:
            return 0.0, verdicts
        if await passes(rate):
            good = rate
        else:
            bad = rate
    for _ in range(bisections):
        middle = _rounded((good + bad) / 2)
        if middle in (good, bad) or len(verdicts) >= MAX_PROBES:
            break
        if await passes(middle):
            good = middle
        else:
            bad = middle
    return good, verdicts


def _rounded(rate: float) -> float:
    """Whole arrivals per second above 10/s: finer steps are below what a probe can tell."""
    return float(round(rate)) if rate >= 10 else round(rate, 1)


@dataclass
class CapacityResult:
    capacity: float
    p99_bound: float
    step_seconds: float
    probes: list[Verdict]
    records: list[ClientRecord]

    def as_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "p99_bound_ms": round(self.p99_bound * 1000, 1),
            "step_seconds": self.step_seconds,
            "probes": [probe.as_dict() for probe in self.probes],
        }


async def find_capacity(
    urls: Sequence[str],
    token: str,
    *,
    p99_bound: float = 0.100,
    step_seconds: float = 5.0,
    prefix: str,
    start_rate: float = 25.0,
    growth: float = 2.0,
    bisections: int = 3,
    max_rate: float = 2000.0,
    wait_seconds: float = 10.0,
    goodput_deadline: float = 1.0,
    seed: int | None = None,
    settle_seconds: float = 30.0,
    on_probe: Callable[[Verdict], None] | None = None,
    on_start: Callable[[int, float], None] | None = None,
    progress: Callable[[LiveStatus], None] | None = None,
) -> CapacityResult:
    """Search the rate the stack at ``urls`` sustains (see the module); ``p99_bound`` in seconds.

    ``on_start(number, rate)`` is called before each probe and ``on_probe(verdict)`` after it;
    ``progress`` is passed on to each probe's open loop.
    """
    records: list[ClientRecord] = []
    numbers = itertools.count(1)

    async def probe(rate: float) -> Verdict:
        number = next(numbers)
        if on_start is not None:
            on_start(number, rate)
        result = await run_open_loop(
            urls,
            token,
            [Phase.constant(rate, step_seconds)],
            prefix=f"{prefix}-p{number}",
            goodput_deadline=goodput_deadline,
            wait_seconds=wait_seconds,
            seed=None if seed is None else seed + number,
            progress=progress,
        )
        records.extend(result.records)
        await settle(urls, token, result.records, seconds=settle_seconds)
        verdict = judge(rate, result.summary, p99_bound=p99_bound)
        if on_probe is not None:
            on_probe(verdict)
        return verdict

    capacity, verdicts = await search_capacity(
        probe, start_rate=start_rate, growth=growth, bisections=bisections, max_rate=max_rate
    )
    return CapacityResult(capacity, p99_bound, step_seconds, verdicts, records)
