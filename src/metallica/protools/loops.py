"""The background loops' keeper: a loop that fails is logged, backed off from and retried,
never ended, and how it fares (:class:`LoopHealth`) is what the readiness check reads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# The longest a failing loop waits before it tries again.
MAX_LOOP_BACKOFF = 10.0


@dataclass
class LoopHealth:
    """How a background loop fares: the readiness check reads it."""

    name: str
    failures: int = 0
    last_error: str | None = None
    last_success: float | None = None  # monotonic
    task: asyncio.Task[None] | None = None

    @property
    def ok(self) -> bool:
        running = self.task is not None and not self.task.done()
        return running and self.failures == 0

    def succeeded(self) -> None:
        self.failures, self.last_error, self.last_success = 0, None, time.monotonic()

    def failed(self, error: BaseException) -> float:
        """Note a failure; return how long to back off before the next try."""
        self.failures += 1
        self.last_error = type(error).__name__
        return min(MAX_LOOP_BACKOFF, 0.1 * float(2 ** min(self.failures, 10)))

    def describe(self) -> dict[str, Any]:
        return {"ok": self.ok, "failures": self.failures, "last_error": self.last_error}


async def keep_running(
    health: LoopHealth,
    step: Callable[[], Awaitable[float]],
    sleep: Callable[[float], Awaitable[None]],
) -> None:
    """Run ``step`` again and again, sleeping what it asks, until cancelled. Whatever it
    raises is logged and backed off from, and shows in ``health``: never the end of the loop
    (a recovery loop that died in silence would leave its replica taking over nothing)."""
    while True:
        try:
            delay = await step()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            backoff = health.failed(error)
            logger.error(
                "metallica.relay_loop_failed",
                exc_info=error,
                extra={"loop": health.name, "failures": health.failures, "retry_in": backoff},
            )
            await asyncio.sleep(backoff)
            continue
        health.succeeded()
        await sleep(delay)


async def sleep_unless_woken(wake: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds, or until ``wake`` is set; a cancellation always ends it.

    ``asyncio.timeout``, not ``asyncio.wait_for``: Python 3.11's ``wait_for`` returns, and loses
    the cancellation, when the wake-up and the cancellation come at once (fixed in 3.12). A
    relay slot freed during shutdown did exactly that: the recovery loop outlived its
    cancellation, and the shutdown that awaited it hung."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await wake.wait()
