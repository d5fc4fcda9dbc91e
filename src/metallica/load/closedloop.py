"""The closed-loop load generator: C clients, each sending its next command when the last is
answered, until N commands were answered.

Each command is a new username under a new Idempotency-Key, sent with ``Prefer: wait`` so the
answer carries the password. Latency is measured from send to answer, with the monotonic clock.
The client is aiohttp's, on one event loop, so the generator itself costs little CPU beside the
services it measures. Every answer is kept as a :class:`~metallica.load.records.ClientRecord`, for
the invariant checker.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from metallica.load.records import FAILED, OK, ClientRecord
from metallica.protools.clients import parse_retry_after

CREATE = "/v1/workflows/password-creation"
WAIT_SECONDS = 30


@dataclass
class Sample:
    """One command: when it was sent (monotonic), how long its answer took, what it was."""

    sent: float
    latency: float
    status: int | str
    record: ClientRecord

    @property
    def ok(self) -> bool:
        return self.record.told == OK


@dataclass
class Round:
    """What one closed-loop round measured."""

    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    elapsed: float = 0.0
    refused: int = 0  # 429/503 answers with Retry-After, waited out and sent again

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def errors(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for sample in self.samples:
            if not sample.ok:
                counted[str(sample.status)] = counted.get(str(sample.status), 0) + 1
        return counted

    @property
    def throughput(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, fraction: float) -> float:
        """The latency below which ``fraction`` of the answers came (nearest rank), seconds."""
        latencies = sorted(sample.latency for sample in self.samples)
        if not latencies:
            return 0.0
        rank = max(1, min(len(latencies), round(fraction * len(latencies) + 0.5)))
        return latencies[rank - 1]


Progress = Callable[[int, int, float], None]  # done, total, seconds so far


class ClosedLoop:
    """Send commands to ``urls`` (replicas of protools, or the floor) in closed loops."""

    def __init__(self, urls: Sequence[str], token: str, *, prefix: str) -> None:
        self._urls = [url.rstrip("/") for url in urls]
        self._token = token
        self._prefix = prefix
        self._numbers = itertools.count(1)
        self.refusals = 0  # answers that said "not now, retry after": waited out and resent

    async def run(self, concurrency: int, count: int, *, progress: Progress | None = None) -> Round:
        """Answer ``count`` commands with ``concurrency`` clients; return what was measured."""
        result = Round(concurrency)
        refusals_before = self.refusals
        remaining = iter(range(count))
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=WAIT_SECONDS + 30)
        headers = {"Authorization": f"Bearer {self._token}", "Prefer": f"wait={WAIT_SECONDS}"}
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers
        ) as session:
            started = time.monotonic()

            async def client(lane: int) -> None:
                for _ in remaining:
                    url = self._urls[lane % len(self._urls)]
                    result.samples.append(await self._one(session, url))
                    if progress is not None:
                        progress(len(result.samples), count, time.monotonic() - started)

            await asyncio.gather(*(client(lane) for lane in range(concurrency)))
            result.elapsed = time.monotonic() - started
            result.refused = self.refusals - refusals_before
        return result

    async def _one(self, session: aiohttp.ClientSession, url: str) -> Sample:
        """One command, sent again after its ``Retry-After`` while protools refuses it for load
        (429 or 503 with the header), as a well-behaved client would: a refusal is not an
        error, and the latency includes the wait."""
        number = next(self._numbers)
        record = ClientRecord(f"{self._prefix}-k{number}", f"{self._prefix}-u{number}")
        sent = time.monotonic()
        status: int | str
        while True:
            record.posts += 1
            retry_after = None
            try:
                async with session.post(
                    url + CREATE,
                    json={"username": record.username},
                    headers={"Idempotency-Key": record.key},
                ) as response:
                    status = response.status
                    body = await response.json(content_type=None)
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                status, body = type(error).__name__, None
            record.statuses.append(status)
            if retry_after is None or status not in (429, 503):
                break
            if time.monotonic() - sent + retry_after > WAIT_SECONDS:
                break  # refused for longer than a client would wait: an error
            self.refusals += 1
            await asyncio.sleep(retry_after)
        latency = time.monotonic() - sent
        if isinstance(body, dict):
            record.workflow_id = body.get("workflow_id")
            if status == 200 and body.get("status") == "completed":
                record.told, record.password = OK, body.get("password")
            elif isinstance(status, int) and 400 <= status < 500:
                record.told, record.error = FAILED, str(body.get("type", ""))
        return Sample(sent, latency, status, record)
