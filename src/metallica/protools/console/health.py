"""What the console's health view shows: every protools replica's admission and breakers, from
the health board (:mod:`metallica.protools.board`, which :func:`snapshot` feeds); and in full
for the replica that serves it: its admission (limit, in progress, queued, refusals by reason),
each downstream service's guard (breaker, adaptive limit, retry budget), the outbox, the log's
tail, its readiness checks, and each downstream service's readiness (its ``/readyz``, asked at
each request, a second at most).

Read from the live objects protools' app keeps on ``app.state`` (the same ones ``/metrics``
reads), at each request; nothing here changes anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from metallica.protools import board
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
class ReplicaRow:
    """One protools replica as the board last heard of it."""

    replica: str
    this: bool  # the replica serving the page
    age: float
    silent: bool  # no report for a while: crashed, frozen, or cut off from the database
    stopped: bool  # it said so as it stopped
    ready: bool
    admission_limit: int
    admission_in_flight: int
    queued: int
    refused: int
    breakers: str  # "generator closed, mailer open"
    log_lag: float


def replica_row(found: board.ReplicaReport, this: str) -> ReplicaRow:
    """A board report as a row; what an older or newer replica left out reads as zero."""
    report = found.report
    admission = report.get("admission", {})
    breakers = ", ".join(
        f"{guard.get('service', '?')} {guard.get('breaker', '?')}"
        for guard in report.get("guards", [])
    )
    stopped = bool(report.get("stopped"))
    return ReplicaRow(
        replica=found.replica,
        this=found.replica == this,
        age=round(found.age, 1),
        silent=found.silent and not stopped,
        stopped=stopped,
        ready=bool(report.get("ready")) and not found.silent and not stopped,
        admission_limit=int(admission.get("limit", 0)),
        admission_in_flight=int(admission.get("in_flight", 0)),
        queued=int(admission.get("queued", 0)),
        refused=int(sum(report.get("refusals", {}).values())),
        breakers=breakers,
        log_lag=float(report.get("log", {}).get("lag", 0.0)),
    )


def _guards(state: Any) -> list[GuardView]:
    relay: Relay = state.relay
    guards: dict[str, DownstreamGuard] = dict(relay.guards)
    return [
        GuardView(
            service=name,
            breaker=guard.breaker.state,
            limit=guard.limiter.limit,
            in_flight=guard.limiter.in_flight,
            budget=round(guard.budget.available, 1),
        )
        for name, guard in sorted(guards.items())
    ]


async def snapshot(state: Any) -> dict[str, Any]:
    """What the replica whose ``app.state`` this is alone knows of its health, for the board.

    Its readiness leaves out the database check: that check answers within a second of its
    own and leaves its thread running past that (:func:`metallica.threads.within`), and a
    background loop must leave no thread using the database once it is cancelled (shutdown
    closes the database next). The board's own write is the database check here: a replica
    that cannot write goes silent."""
    ready, _ = await run_readiness_checks(state, without=("database",))
    return _snapshot(state, ready)


def _snapshot(state: Any, ready: bool) -> dict[str, Any]:
    admission: Admission = state.admission
    tailer: LogTailer = state.tailer
    return {
        "ready": ready,
        "admission": {
            "limit": admission.limiter.limit,
            "in_flight": admission.limiter.in_flight,
            "queued": admission.queue.length,
        },
        "refusals": _refusals(state.metrics),
        "guards": [vars(guard) for guard in _guards(state)],
        "log": {"position": tailer.position, "lag": round(tailer.lag_seconds, 3)},
    }


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
    replicas: list[ReplicaRow]


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
    tailer: LogTailer = state.tailer
    outbox, replicas = await asyncio.gather(
        in_thread(service.outbox_summary), in_thread(board.read, service.database)
    )
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
        guards=_guards(state),
        outbox_depth=outbox.depth,
        outbox_oldest_age=round(outbox.oldest_age, 1),
        log_position=tailer.position,
        log_lag=round(tailer.lag_seconds, 3),
        log_followers=tailer.followers,
        ready=ready,
        checks=checks,
        services=services,
        replicas=with_this_one(replicas, service.replica_id, _snapshot(state, ready)),
    )


def with_this_one(
    reports: Sequence[board.ReplicaReport], this: str, live: Mapping[str, Any]
) -> list[ReplicaRow]:
    """The board's rows, this replica's as it is now (its last report may be 2 s old)."""
    others = [found for found in reports if found.replica != this]
    now = board.ReplicaReport(this, 0.0, live)
    return [replica_row(found, this) for found in sorted([*others, now], key=lambda r: r.replica)]
