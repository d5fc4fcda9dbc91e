"""The outbox relay: delivers each step's call, records the outcome, schedules retries.

Hot path: the request that creates a workflow hands its first message (already leased to this
replica) to :meth:`Relay.deliver` at once, and each recorded success hands over the next step's
message the same way: no polling on the way. Recovery path: a loop claims due messages (retries
whose time came, messages of a dead replica whose lease ran out), sleeping until the next one
falls due, or ``poll_interval`` at most, since other replicas' changes are not seen here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from metallica.faults import FaultPoints
from metallica.protools import store
from metallica.protools.clients import ServiceClients
from metallica.protools.engine import Call
from metallica.protools.service import WorkflowService
from metallica.storage import StorageError

logger = logging.getLogger(__name__)


class Watchers:
    """In-process wake-ups for whoever waits on a workflow (the creating request, a GET)."""

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[asyncio.Event, int]] = {}

    async def wait(self, workflow_id: str, timeout: float) -> None:
        """Return when the workflow changes here, or after ``timeout`` seconds."""
        event, waiters = self._waiting.get(workflow_id, (asyncio.Event(), 0))
        self._waiting[workflow_id] = (event, waiters + 1)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            current = self._waiting.get(workflow_id)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._waiting[workflow_id]
                else:
                    self._waiting[workflow_id] = (event, current[1] - 1)

    def notify(self, workflow_id: str) -> None:
        waiting = self._waiting.pop(workflow_id, None)
        if waiting is not None:
            waiting[0].set()


class Relay:
    def __init__(
        self,
        service: WorkflowService,
        clients: ServiceClients,
        watchers: Watchers,
        *,
        poll_interval: float,
        faults: FaultPoints | None = None,
        batch_size: int = 32,
        concurrency: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self._clients = clients
        self._watchers = watchers
        self._poll_interval = poll_interval
        self._faults = faults or FaultPoints()
        self._batch_size = batch_size
        self._slots = asyncio.Semaphore(concurrency)
        self._clock = clock
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def start_delivery(self, message: store.OutboxMessage) -> None:
        """Deliver ``message`` (leased to us) in the background, now."""
        task = asyncio.get_running_loop().create_task(self.deliver(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def wake(self) -> None:
        self._wake.set()

    async def deliver(self, message: store.OutboxMessage | None) -> None:
        """Deliver a message and, while each step succeeds at once, the steps after it."""
        while message is not None:
            async with self._slots:
                message = await self._attempt(message)

    async def _attempt(self, message: store.OutboxMessage) -> store.OutboxMessage | None:
        definition = self._service.definition
        try:
            if message.attempts > 1 and not await run_in_threadpool(
                self._service.may_attempt, message
            ):
                self._watchers.notify(message.stream_id)
                return None
            step = definition.step(message.step)
            call = Call.from_payload(message.payload)
            started = time.monotonic()
            replica, outcome = await self._clients.send(call, message.attempts, step.interpret)
            elapsed_ms = (time.monotonic() - started) * 1000
            await self._hit("before_record")
            recorded = await run_in_threadpool(
                self._service.record,
                message,
                outcome,
                replica=replica,
                elapsed_ms=elapsed_ms,
                next_replica=self._clients.replica_for(call, message.attempts + 1),
            )
            await self._hit("after_record")
        except StorageError as error:
            # The lease runs out and the message is claimed again: nothing is lost.
            logger.warning(
                "metallica.relay_storage_error",
                extra={"workflow_id": message.stream_id, "step": message.step, "error": error.code},
            )
            return None
        except Exception:
            logger.exception(
                "metallica.relay_delivery_crashed",
                extra={"workflow_id": message.stream_id, "step": message.step},
            )
            return None  # the lease runs out and another attempt is made
        logger.info(
            "metallica.step_attempted",
            extra={
                "workflow_id": message.stream_id,
                "step": message.step,
                "attempt": message.attempts,
                "outcome": type(outcome).__name__,
                "reason": getattr(outcome, "reason", None),
                "elapsed_ms": round(elapsed_ms, 1),
            },
        )
        self._watchers.notify(message.stream_id)
        if recorded.retry_at is not None:
            self.wake()
        return recorded.message

    async def _hit(self, point: str) -> None:
        if self._faults.armed:
            await run_in_threadpool(self._faults.hit, point)

    async def run(self) -> None:
        """Claim and deliver due messages until cancelled."""
        while True:
            self._wake.clear()  # before looking, so a wake-up while we look is not lost
            try:
                delay = await self._deliver_due()
            except StorageError as error:
                logger.warning("metallica.relay_poll_failed", extra={"error": error.code})
                delay = self._poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _deliver_due(self) -> float:
        """Start delivering every due message; return how long to sleep."""
        due = await run_in_threadpool(self._service.next_due_time)
        now = self._clock()
        if due is None or due > now:
            return self._poll_interval if due is None else min(self._poll_interval, due - now)
        messages = await run_in_threadpool(self._service.claim_due, self._batch_size)
        for message in messages:
            self.start_delivery(message)
        return 0 if messages else min(self._poll_interval, 0.1)

    async def aclose(self, grace: float = 2.0) -> None:
        """Let in-flight deliveries finish for ``grace`` seconds; the rest resume elsewhere."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
