"""The relay's background loops keep running whatever a round raises, and say how they fare."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

import pytest

from metallica.protools.loops import LoopHealth, keep_running, sleep_unless_woken


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


async def _woken_and_cancelled_at_once(sleep: Callable[[asyncio.Event, float], Any]) -> bool:
    """Whether a sleeper ends with CancelledError when its wake-up and its cancellation come in
    the same turn of the loop (the shutdown of a relay whose last delivery frees a slot)."""
    wake = asyncio.Event()
    sleeper = asyncio.get_running_loop().create_task(sleep(wake, 30.0))
    await asyncio.sleep(0)  # the sleeper now waits
    wake.set()
    sleeper.cancel()
    try:
        await sleeper
    except asyncio.CancelledError:
        return True
    return False


async def _wait_for_sleep(wake: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), delay)


def test_a_cancelled_sleeper_ends_even_when_woken_at_the_same_moment() -> None:
    assert asyncio.run(_woken_and_cancelled_at_once(sleep_unless_woken))


def test_the_race_is_real_with_wait_for_before_python_3_12() -> None:
    # The reason sleep_unless_woken does not use asyncio.wait_for: on Python 3.11 this sleeper
    # loses its cancellation and returns, and a loop built on it runs on (3.12 fixed it).
    keeps_cancellation = asyncio.run(_woken_and_cancelled_at_once(_wait_for_sleep))
    assert keeps_cancellation == (sys.version_info >= (3, 12))
