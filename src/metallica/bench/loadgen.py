"""The closed-loop load generator: C clients, each sending its next command when the last is
answered, until N commands were answered.

Each command is a new username under a new Idempotency-Key, sent with ``Prefer: wait`` so the
answer carries the password. Latency is measured from send to answer, with the monotonic clock.
The client is aiohttp's, on one event loop, so the generator itself costs little CPU beside the
services it measures. Every answer is kept as a :class:`~metallica.lab.checker.ClientRecord`, for
the invariant checker.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from metallica.lab.checker import FAILED, OK, ClientRecord

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

    async def run(self, concurrency: int, count: int, *, progress: Progress | None = None) -> Round:
        """Answer ``count`` commands with ``concurrency`` clients; return what was measured."""
        result = Round(concurrency)
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
        return result

    async def _one(self, session: aiohttp.ClientSession, url: str) -> Sample:
        number = next(self._numbers)
        record = ClientRecord(f"{self._prefix}-k{number}", f"{self._prefix}-u{number}")
        record.posts = 1
        sent = time.monotonic()
        status: int | str
        try:
            async with session.post(
                url + CREATE,
                json={"username": record.username},
                headers={"Idempotency-Key": record.key},
            ) as response:
                status = response.status
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            status, body = type(error).__name__, None
        latency = time.monotonic() - sent
        record.statuses.append(status)
        if isinstance(body, dict):
            record.workflow_id = body.get("workflow_id")
            if status == 200 and body.get("status") == "completed":
                record.told, record.password = OK, body.get("password")
            elif isinstance(status, int) and 400 <= status < 500:
                record.told, record.error = FAILED, str(body.get("type", ""))
        return Sample(sent, latency, status, record)
