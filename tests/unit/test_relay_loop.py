"""The relay's background loops keep running whatever a round raises, and say how they fare."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from metallica.protools.loops import LoopHealth, keep_running


def test_a_loop_survives_any_error_backs_off_and_reports_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Errors no storage adapter translates: a corrupt file, an unreadable row, a bug.
    failures: list[Exception] = [
        sqlite3.DatabaseError("file is not a database"),
        ValueError("Expecting value: line 1 column 1"),
        KeyError("step"),
    ]
    rounds: list[str] = []
    health = LoopHealth("recovery")
    seen_unhealthy: list[bool] = []

    async def step() -> float:
        rounds.append("round")
        if failures:
            raise failures.pop(0)
        return 0.0

    async def sleep(delay: float) -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        health.task = asyncio.get_running_loop().create_task(keep_running(health, step, sleep))
        while len(rounds) < 2:
            await asyncio.sleep(0.01)
        seen_unhealthy.append(health.ok)
        while len(rounds) < 6:
            await asyncio.sleep(0.01)
        assert health.ok, health.describe()
        health.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await health.task

    with caplog.at_level(logging.ERROR):
        asyncio.run(asyncio.wait_for(main(), 30))

    assert seen_unhealthy == [False]
    assert health.failures == 0
    assert health.last_success is not None
    failed = [r for r in caplog.records if r.message == "metallica.relay_loop_failed"]
    assert [r.exc_info[0] for r in failed if r.exc_info] == [
        sqlite3.DatabaseError,
        ValueError,
        KeyError,
    ]


def test_backoff_grows_and_is_capped() -> None:
    health = LoopHealth("lease_renewal")
    delays = [health.failed(RuntimeError("x")) for _ in range(12)]
    assert delays == sorted(delays)
    assert delays[0] == pytest.approx(0.2)
    assert delays[-1] == 10.0
    assert health.describe() == {"ok": False, "failures": 12, "last_error": "RuntimeError"}
    health.succeeded()
    assert health.failures == 0
