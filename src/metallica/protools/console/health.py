"""What the console's health view shows of the replica that serves it: its admission (limit,
in progress, queued, refusals by reason), each downstream service's guard (breaker, adaptive
limit, retry budget), the outbox, the log's tail, its readiness checks, and each downstream
service's readiness (its ``/readyz``, asked at each request, a second at most).

Read from the live objects protools' app keeps on ``app.state`` (the same ones ``/metrics``
reads), at each request; nothing here changes anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from metallica.protools.flow import Admission, DownstreamGuard
from metallica.protools.metrics import ProtoolsMetrics
from metallica.protools.relay import Relay
from metallica.protools.service import WorkflowService
from metallica.protools.tailer import LogTailer
from metallica.threads import in_thread
from metallica.web.app import run_readiness_checks


@dataclass(frozen=True)
class GuardView:
    service: str
    breaker: str
    limit: int
    in_flight: int
    budget: float


@dataclass(frozen=True)
class Readiness:
    """A downstream replica's answer to ``/readyz``."""

    service: str
    url: str
    ready: bool
    detail: str


READYZ_TIMEOUT = 1.0


async def _readiness(downstream: Mapping[str, Sequence[str]]) -> list[Readiness]:
    """Each downstream URL's readiness, asked at once, each within :data:`READYZ_TIMEOUT`."""

    async def ask(client: httpx.AsyncClient, service: str, url: str) -> Readiness:
        try:
            answer = await client.get(url.rstrip("/") + "/readyz")
        except httpx.HTTPError as error:
            return Readiness(service, url, False, type(error).__name__)
        failing = (
            [
                name
                for name, check in answer.json().get("checks", {}).items()
                if isinstance(check, dict) and not check.get("ok")
            ]
            if answer.headers.get("content-type", "").startswith("application/json")
            else []
        )
        detail = "failing: " + ", ".join(failing) if failing else f"HTTP {answer.status_code}"
        return Readiness(service, url, answer.status_code == 200, detail)

    async with httpx.AsyncClient(timeout=READYZ_TIMEOUT) as client:
        asked = [ask(client, service, url) for service, urls in downstream.items() for url in urls]
        return list(await asyncio.gather(*asked))


@dataclass(frozen=True)
class HealthReport:
    replica: str
    admission_limit: int
    admission_in_flight: int
    queued: int
    queue_standing: bool
    refusals: dict[str, float]
    guards: list[GuardView]
    outbox_depth: int
    outbox_oldest_age: float
    log_position: int | None
    log_lag: float
    log_followers: int
    ready: bool
    checks: dict[str, dict[str, Any]]
    services: list[Readiness]


def _refusals(metrics: ProtoolsMetrics) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.name == "metallica_shed":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    reason = sample.labels.get("reason", "")
                    counts[reason] = counts.get(reason, 0.0) + sample.value
    return dict(sorted(counts.items()))


async def report(state: Any) -> HealthReport:
    """The health of the replica whose ``app.state`` this is."""
    service: WorkflowService = state.service
    admission: Admission = state.admission
    relay: Relay = state.relay
    tailer: LogTailer = state.tailer
    guards: dict[str, DownstreamGuard] = dict(relay.guards)
    outbox = await in_thread(service.outbox_summary)
    (ready, checks), services = await asyncio.gather(
        run_readiness_checks(state), _readiness(getattr(state, "downstream", {}))
    )
    return HealthReport(
        replica=service.replica_id,
        admission_limit=admission.limiter.limit,
        admission_in_flight=admission.limiter.in_flight,
        queued=admission.queue.length,
        queue_standing=bool(admission.queue.standing),
        refusals=_refusals(state.metrics),
        guards=[
            GuardView(
                service=name,
                breaker=guard.breaker.state,
                limit=guard.limiter.limit,
                in_flight=guard.limiter.in_flight,
                budget=round(guard.budget.available, 1),
            )
            for name, guard in sorted(guards.items())
        ],
        outbox_depth=outbox.depth,
        outbox_oldest_age=round(outbox.oldest_age, 1),
        log_position=tailer.position,
        log_lag=round(tailer.lag_seconds, 3),
        log_followers=tailer.followers,
        ready=ready,
        checks=checks,
        services=services,
    )
