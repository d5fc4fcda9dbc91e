"""What an open loop measured, reduced to figures: outcomes, percentiles, goodput, a timeline.

Pure functions of the samples, so the numbers a report shows are unit-tested apart from any
network. Conventions, and why:

- Latency runs from an arrival's *scheduled* time, not from when it was actually sent: if the
  load generator (or the connection pool) fell behind, that delay is part of what a client would
  have seen, and leaving it out is coordinated omission.
- *Admitted* is every arrival that was not shed (429 or 503): completed, failed, still running
  when the wait ended (202), or lost to a client error or timeout. Shed requests are summarised
  apart: their latency tells how fast the system refuses, which is a different figure.
- *Throughput* is completed commands (200 with ``"status": "completed"``) per second of the
  schedule; *goodput* counts only those completed within the deadline a client would tolerate.
- The timeline bins arrivals by the second in which they were scheduled, so a second's row says
  what happened to the load offered during that second.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from metallica.load.records import ClientRecord
from metallica.load.schedule import Phase, rate_at, total_seconds

COMPLETED = "completed"  # 200, the workflow completed: the password is in the answer
REJECTED = "rejected"  # 429 or 503: shed, never accepted
PENDING = "pending"  # 202: accepted, still running when the wait ended
FAILED = "failed"  # another 4xx: the workflow failed, or the request was refused as invalid
ERROR = "error"  # any other status, or no answer at all (connection error, client timeout)
OUTCOMES = (COMPLETED, REJECTED, PENDING, FAILED, ERROR)
SHED_STATUSES = (429, 503)


@dataclass
class OpenSample:
    """One arrival: when it was due, how late it left, how long its answer took, what it was."""

    scheduled: float  # seconds from the start of the schedule
    lag: float  # seconds between the scheduled and the actual send
    latency: float  # seconds from the scheduled send to the answer
    status: int | str  # the HTTP status, or the client error's name
    outcome: str
    retry_after: bool  # the answer carried a Retry-After header
    record: ClientRecord


def classify(status: int | str, body: object) -> str:
    """The outcome of one answer (see the module's constants)."""
    if status == 200 and isinstance(body, dict) and body.get("status") == "completed":
        return COMPLETED
    if status in SHED_STATUSES:
        return REJECTED
    if status == 202:
        return PENDING
    if isinstance(status, int) and 400 <= status < 500:
        return FAILED
    return ERROR


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values`` (sorted or not); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def latency_ms(samples: Iterable[OpenSample]) -> dict[str, float | None]:
    """p50, p95, p99 and max latency of ``samples``, in milliseconds (None when empty)."""
    latencies = [sample.latency for sample in samples]
    return {
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p95_ms": _ms(percentile(latencies, 0.95)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        "max_ms": _ms(max(latencies, default=None)),
    }


def summarize(
    samples: Sequence[OpenSample], phases: Sequence[Phase], *, goodput_deadline: float
) -> dict[str, Any]:
    """The run's figures as a JSON-ready dict (see the module docstring for the terms)."""
    seconds = total_seconds(phases)
    by_outcome = Counter(sample.outcome for sample in samples)
    admitted = [sample for sample in samples if sample.outcome != REJECTED]
    rejected = [sample for sample in samples if sample.outcome == REJECTED]
    completed = [sample for sample in samples if sample.outcome == COMPLETED]
    good = sum(1 for sample in completed if sample.latency <= goodput_deadline)
    errors = Counter(str(s.status) for s in samples if s.outcome in (FAILED, ERROR))
    arrivals = len(samples)
    lags = [sample.lag for sample in samples]

    def per_second(count: int) -> float:
        return round(count / seconds, 1) if seconds > 0 else 0.0

    return {
        "seconds": seconds,
        "phases": [str(phase) for phase in phases],
        "arrivals": arrivals,
        "offered_rate": per_second(arrivals),
        "completed": len(completed),
        "throughput": per_second(len(completed)),
        "goodput": per_second(good),
        "goodput_deadline_s": goodput_deadline,
        "outcomes": {outcome: by_outcome.get(outcome, 0) for outcome in OUTCOMES},
        "admitted": len(admitted),
        "admitted_latency": latency_ms(admitted),
        "rejected": len(rejected),
        "rejected_fraction": round(len(rejected) / arrivals, 4) if arrivals else 0.0,
        "rejection_latency": latency_ms(rejected),
        "rejections_by_status": dict(sorted(Counter(str(s.status) for s in rejected).items())),
        "rejections_without_retry_after": sum(1 for s in rejected if not s.retry_after),
        "pending": by_outcome.get(PENDING, 0),
        "errors": dict(sorted(errors.items())),
        "send_lag_p99_ms": _ms(percentile(lags, 0.99)),
        "send_lag_max_ms": _ms(max(lags, default=None)),
    }


def timeline(samples: Sequence[OpenSample], phases: Sequence[Phase]) -> list[dict[str, Any]]:
    """One row per second of the schedule: the load offered then, and what became of it."""
    seconds = max(1, math.ceil(total_seconds(phases)))
    bins: list[list[OpenSample]] = [[] for _ in range(seconds)]
    for sample in samples:
        bins[min(seconds - 1, max(0, int(sample.scheduled)))].append(sample)
    rows = []
    for second, found in enumerate(bins):
        admitted = [s.latency for s in found if s.outcome != REJECTED]
        rows.append(
            {
                "second": second,
                "target_rate": round(rate_at(phases, second + 0.5), 1),
                "arrivals": len(found),
                "completed": sum(1 for s in found if s.outcome == COMPLETED),
                "rejected": sum(1 for s in found if s.outcome == REJECTED),
                "errors": sum(1 for s in found if s.outcome in (FAILED, ERROR)),
                "admitted_p50_ms": _ms(percentile(admitted, 0.50)),
                "admitted_p99_ms": _ms(percentile(admitted, 0.99)),
            }
        )
    return rows
