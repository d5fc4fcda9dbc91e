"""The open-loop load generator: commands sent on a schedule, whether or not earlier ones were
answered.

A closed loop (:mod:`metallica.load.closedloop`) slows down with the system it measures: a client
waits for its answer before sending again, so an overloaded server sees less load and its worst
latencies go unrecorded (coordinated omission). Here each arrival is due at a time drawn from a
Poisson process (:mod:`metallica.load.schedule`) and gets its own task at that time; its latency
counts from when it was *due*, so a late send, a queue in the connection pool or a slow answer
are all part of it. That is what overload behaviour (admission control, bounded latency of what
is admitted, fast refusals with Retry-After) has to be measured with.

The API, for ``metallica bench --open-loop`` and for the overload scenarios that drive a stack of
their own (everything runs inside one event loop; start it with ``asyncio.run`` or the bench's
``run_on_uvloop``)::

    result = await run_open_loop(
        urls,            # protools replicas, loopback only (http://127.0.0.1:PORT)
        token,           # the API token
        phases,          # [Phase.constant(400, 30), Phase.constant(100, 20)] or parse_phases(...)
        prefix="ovl1",   # usernames and keys are f"{prefix}-u{n}", f"{prefix}-k{n}"
        goodput_deadline=1.0,
        wait_seconds=10,  # Prefer: wait=N on every POST; the client timeout is N + 10 s
    )
    result.summary    # throughput, goodput, admitted p50/p95/p99/max, rejection p50/p99,
                      # rejections by status, rejections without Retry-After, errors, pending
    result.timeline   # one row per scheduled second: arrivals, completed, rejected, errors,
                      # admitted p50 and p99
    result.samples    # every arrival (OpenSample), and result.records for the checker
    await settle(urls, token, result.records)  # follow 202s to their end before checking

and :func:`metallica.load.capacity.find_capacity` probes a stack with short open loops to find
the highest rate it sustains. Commands answered 429 or 503 are recorded as refused
(``told=FAILED``, ``error="rejected: HTTP 429 ..."``): the checker holds a client's "ok" against
the stores, and checks every command the stores hold, so a shed command that was never stored
is no violation, and one that was stored anyway is still checked like any accepted command.

Bounds: at most :data:`~metallica.load.schedule.MAX_ARRIVALS` arrivals and
:data:`~metallica.load.schedule.MAX_SECONDS` of schedule, ``max_in_flight`` connections, every
request under a client timeout, the last answers awaited at most that long; only loopback URLs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import random
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from metallica.load import records as told
from metallica.load.closedloop import CREATE
from metallica.load.records import ClientRecord
from metallica.load.schedule import MAX_ARRIVALS, Phase, arrivals, rate_at, total_seconds
from metallica.load.stats import (
    COMPLETED,
    ERROR,
    FAILED,
    PENDING,
    REJECTED,
    OpenSample,
    classify,
    summarize,
    timeline,
)

CLIENT_MARGIN = 10.0  # seconds a request may take beyond the wait it asked for
MAX_IN_FLIGHT = 2048  # connections at once: past that, arrivals queue (and their latency shows)
MAX_WAIT = 60.0  # seconds a command may ask protools to wait (it caps the wait itself, at 30)


@dataclass(frozen=True)
class LiveStatus:
    """Where a running open loop is, for a progress line (once a second)."""

    elapsed: float
    target_rate: float
    sent: int
    in_flight: int
    done: dict[str, int]  # answers so far, by outcome
    draining: bool  # the schedule is over: waiting for the last answers


@dataclass
class OpenLoopResult:
    """What one open loop measured (see the module docstring)."""

    phases: list[Phase]
    samples: list[OpenSample]
    elapsed: float  # wall-clock seconds: the schedule, then the wait for its last answers
    summary: dict[str, Any]
    timeline: list[dict[str, Any]]

    @property
    def records(self) -> list[ClientRecord]:
        return [sample.record for sample in self.samples]


def require_loopback(urls: Sequence[str]) -> list[str]:
    """The URLs without a trailing slash; a ValueError unless each is on this machine's loopback.

    An open loop does not slow down when its target does: aimed at a shared server by mistake,
    it is a flood. The stacks it measures run on this machine.
    """
    if not urls:
        raise ValueError("no URL to send to")
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if parts.scheme not in ("http", "https") or not loopback:
            raise ValueError(f"{url}: an open loop only targets this machine (http://127.0.0.1)")
    return [url.rstrip("/") for url in urls]


async def run_open_loop(
    urls: Sequence[str],
    token: str,
    phases: Sequence[Phase],
    *,
    prefix: str,
    goodput_deadline: float = 1.0,
    wait_seconds: float = 10.0,
    seed: int | None = None,
    max_arrivals: int = MAX_ARRIVALS,
    max_in_flight: int = MAX_IN_FLIGHT,
    progress: Callable[[LiveStatus], None] | None = None,
) -> OpenLoopResult:
    """Send the commands ``phases`` schedule to ``urls`` (round robin); return what happened."""
    targets = require_loopback(urls)
    if not 0 < wait_seconds <= MAX_WAIT:
        raise ValueError(f"wait_seconds is more than 0 and at most {MAX_WAIT:g}")
    schedule = arrivals(phases, random.Random(seed), limit=min(max_arrivals, MAX_ARRIVALS))
    numbers = itertools.count(1)
    samples: list[OpenSample] = []
    done: Counter[str] = Counter()
    in_flight: set[asyncio.Task[None]] = set()
    client_timeout = wait_seconds + CLIENT_MARGIN
    headers = {"Authorization": f"Bearer {token}", "Prefer": f"wait={wait_seconds:g}"}
    connector = aiohttp.TCPConnector(limit=max(1, min(max_in_flight, MAX_IN_FLIGHT)))
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=client_timeout),
        headers=headers,
    ) as session:
        origin = time.monotonic()

        async def one(url: str, record: ClientRecord, scheduled: float) -> None:
            lag = time.monotonic() - origin - scheduled

            def unanswered(status: str) -> OpenSample:
                record.statuses.append(status)
                latency = time.monotonic() - origin - scheduled
                return OpenSample(scheduled, lag, latency, status, ERROR, False, record)

            try:
                sample = await _send(session, url, record, scheduled, lag)
            except asyncio.CancelledError:  # unanswered when the backstop ended the run
                samples.append(unanswered("Cancelled"))
                done[ERROR] += 1
                raise
            except Exception as error:  # an unforeseen failure still counts, as an error
                sample = unanswered(type(error).__name__)
            samples.append(sample)
            done[sample.outcome] += 1

        async def report() -> None:
            assert progress is not None
            while True:
                await asyncio.sleep(1.0)
                elapsed = time.monotonic() - origin
                progress(
                    LiveStatus(
                        elapsed,
                        rate_at(phases, elapsed),
                        sum(done.values()) + len(in_flight),
                        len(in_flight),
                        dict(done),
                        elapsed >= total_seconds(phases),
                    )
                )

        reporter = asyncio.create_task(report()) if progress is not None else None
        try:
            for scheduled in schedule:
                delay = origin + scheduled - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                number = next(numbers)
                record = ClientRecord(f"{prefix}-k{number}", f"{prefix}-u{number}", posts=1)
                url = targets[number % len(targets)]
                task = asyncio.create_task(one(url, record, scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:  # the client timeout ends each of them; this is the backstop
                await asyncio.wait(set(in_flight), timeout=client_timeout + 5)
        finally:
            for task in list(in_flight):
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            if reporter is not None:
                reporter.cancel()
        elapsed = time.monotonic() - origin
    samples.sort(key=lambda sample: sample.scheduled)
    return OpenLoopResult(
        list(phases),
        samples,
        elapsed,
        summarize(samples, phases, goodput_deadline=goodput_deadline),
        timeline(samples, phases),
    )


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    record: ClientRecord,
    scheduled: float,
    lag: float,
) -> OpenSample:
    """POST one command; time it from its schedule; tell its record what its client learnt."""
    due = time.monotonic() - lag  # the scheduled time, on the monotonic clock
    status: int | str
    body: object = None
    retry_after = False
    try:
        async with session.post(
            url + CREATE,
            json={"username": record.username},
            headers={"Idempotency-Key": record.key},
        ) as response:
            status = response.status
            retry_after = "Retry-After" in response.headers
            body = _json(await response.read())
    except (aiohttp.ClientError, TimeoutError) as error:
        status = type(error).__name__
    latency = time.monotonic() - due
    outcome = classify(status, body)
    record.statuses.append(status)
    tell(record, outcome, status, body)
    return OpenSample(scheduled, lag, latency, status, outcome, retry_after, record)


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else None
    except ValueError:  # a shed answer may be plain text: its status still counts
        return None


def tell(record: ClientRecord, outcome: str, status: int | str, body: object) -> None:
    """Set what the client of ``record`` was told by an answer of ``outcome``."""
    found = body if isinstance(body, dict) else {}
    if isinstance(found.get("workflow_id"), str):
        record.workflow_id = found["workflow_id"]
    if outcome == COMPLETED:
        record.told, record.password = told.OK, found.get("password")
    elif outcome == REJECTED:
        record.told = told.FAILED
        record.error = f"rejected: HTTP {status} {found.get('type', '')}".rstrip()
    elif outcome == FAILED:
        record.told, record.error = told.FAILED, str(found.get("type", f"HTTP {status}"))
    # PENDING and ERROR: the client does not know yet (UNKNOWN); settle() may learn it.


async def settle(
    urls: Sequence[str],
    token: str,
    records: Sequence[ClientRecord],
    *,
    seconds: float = 30.0,
    concurrency: int = 32,
) -> int:
    """Follow each command answered 202 until its workflow ends, as a polling client would
    (``GET /v1/workflows/{id}`` with ``Prefer: wait``), for at most ``seconds``; update its record
    with the outcome. Returns how many stayed unknown.

    Without this, a command still running when the run ended would read as lost to the checker.
    It also drains the stack between capacity probes, so one probe's backlog does not weigh on
    the next.
    """
    targets = require_loopback(urls)
    waiting = [r for r in records if r.told == told.UNKNOWN and r.workflow_id is not None]
    if not waiting:
        return sum(1 for record in records if record.told == told.UNKNOWN)
    deadline = time.monotonic() + seconds
    lanes = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def follow(index: int, record: ClientRecord) -> None:
            async with lanes:
                while (remaining := deadline - time.monotonic()) > 0:
                    wait = max(1, min(10, int(remaining)))
                    try:
                        async with session.get(
                            f"{targets[index % len(targets)]}/v1/workflows/{record.workflow_id}",
                            headers={"Prefer": f"wait={wait}"},
                            timeout=aiohttp.ClientTimeout(total=wait + CLIENT_MARGIN),
                        ) as response:
                            body = _json(await response.read()) if response.status == 200 else {}
                    except (aiohttp.ClientError, TimeoutError):
                        await asyncio.sleep(min(1.0, max(0.0, remaining)))
                        continue
                    state = body.get("status") if isinstance(body, dict) else None
                    if state == "completed":
                        tell(record, COMPLETED, 200, body)
                        return
                    if state == "failed":
                        error = body.get("error") if isinstance(body, dict) else None
                        record.told = told.FAILED
                        record.error = str(error.get("type", "")) if isinstance(error, dict) else ""
                        return
                    if state is None:
                        await asyncio.sleep(min(1.0, max(0.0, remaining)))

        await asyncio.gather(*(follow(i, record) for i, record in enumerate(waiting)))
    return sum(1 for record in records if record.told == told.UNKNOWN)


__all__ = [
    "CLIENT_MARGIN",
    "COMPLETED",
    "ERROR",
    "FAILED",
    "PENDING",
    "REJECTED",
    "LiveStatus",
    "OpenLoopResult",
    "OpenSample",
    "Phase",
    "require_loopback",
    "run_open_loop",
    "settle",
    "total_seconds",
]
