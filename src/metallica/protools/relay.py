"""The outbox relay: delivers each step's call, records the outcome, schedules retries.

Each attempt's call (:class:`~metallica.protools.clients.ServiceClients`) comes back with what
the service answered, or with why it did not (a transport failure, already a retry); the step
interprets the answer (:attr:`engine.Step.interpret`) into the outcome recorded. Waiters on a
workflow here (:mod:`metallica.protools.watchers`) are told of every change it makes.

Hot path: the request that creates a workflow (:mod:`metallica.protools.intake`) reserves a
delivery slot, and hands its first message (already leased to this replica) to
:meth:`Relay.start_delivery` at once; each recorded success hands over the next step's message
the same way, in the same slot: no polling on the way.

Recovery path: a loop claims due messages (retries whose time came, messages of a dead replica
whose lease ran out), never more than the free slots, so a replica that comes back after an
outage does not grab a backlog it cannot call in time, and none for a service whose circuit is
open here. A second loop extends the leases of the calls in flight, so a slow call keeps its
lease and no other replica starts the same step beside it. Neither loop dies on an error: it
logs, backs off and tries again, and :attr:`Relay.health` tells the readiness check how they fare.

Before each call, the service's guard (:mod:`metallica.protools.flow`) may hold it back: the
circuit is open, a retry is over budget, or no call slot under the service's adaptive limit came
in time. The attempt is then parked, not made: its claim is undone, the history says why the
step waited, and the message is due again later. Nothing fails for it.

Tracing: a delivery runs under a trace (:mod:`metallica.tracing`), which its calls carry to the
services as ``traceparent`` and its log lines as ``trace_id``, beside the ``workflow_id`` every
relay line has. One started by the accepting request (the hot path) runs in a copy of that
request's context, so the first call, and the steps handed over after it, carry the client's
trace. One started later (a retry, a parked step, a dead replica's message) runs under the
workflow's own trace, whose id is the workflow id's hex digits (:func:`tracing.for_workflow`):
the same on every replica and attempt, found from the workflow id alone. The accepting
request's trace is not stored with the message: an outbox payload field that an older replica
does not know would fail its deliveries during a rolling upgrade, and the accepting request's
access line (``workflow_id``) already joins the two traces.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import stamina

from metallica import tracing
from metallica.faults import FaultPoints
from metallica.overload.breaker import OPEN
from metallica.protools import store
from metallica.protools.clients import ServiceClients
from metallica.protools.engine import (
    COMPLETED_STATUS,
    Hold,
    Outcome,
    Response,
    Retry,
    WorkflowState,
)
from metallica.protools.flow import DownstreamGuard, FlowSettings
from metallica.protools.loops import LoopHealth, keep_running, sleep_unless_woken
from metallica.protools.metrics import ProtoolsMetrics
from metallica.protools.service import Recorded, WorkflowService
from metallica.protools.watchers import Watchers
from metallica.storage import StorageBusy, StorageError, StorageUnavailable
from metallica.threads import in_thread

logger = logging.getLogger(__name__)

# When a held-back retry or call is due again: a random time in these bounds (seconds), so the
# parked steps do not all come back at once.
BUDGET_PARK_SECONDS = (0.5, 2.0)
LIMIT_PARK_SECONDS = (0.2, 1.0)
# The process's own generator: the global one is shared with whatever else runs in the process
# (a test's hypothesis strategies check that nobody else draws from it while they do).
_JITTER = random.Random()
BREAKER_PARK_JITTER = 0.5


def _circuit_open(guard: DownstreamGuard) -> tuple[str, str, float]:
    """A park for ``guard``'s open circuit: its reason, its detail, and until the circuit lets a
    probe through (plus a jitter, so the parked steps do not all come back at once)."""
    wait = guard.breaker.opens_again_in() + _JITTER.uniform(0, BREAKER_PARK_JITTER)
    return "circuit-open", f"{guard.name}'s circuit is open", wait


# Told, when a delivery stops, how long it spent in this replica's own work (not waiting on the
# services) if it ended the workflow; None if the workflow goes on later.
Finished = Callable[[float | None], None]


@dataclass
class Delivery:
    """One delivery's time spent waiting on the services: their answers, their call slots."""

    started: float = field(default_factory=time.monotonic)
    elsewhere: float = 0.0

    @property
    def own_seconds(self) -> float:
        return time.monotonic() - self.started - self.elsewhere


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
        concurrency: int = 128,
        record_retry_seconds: float | None = None,
        guards: Mapping[str, DownstreamGuard] | None = None,
        limit_wait: float = 1.0,
        metrics: ProtoolsMetrics | None = None,
    ) -> None:
        self._service = service
        self._clients = clients
        self._watchers = watchers
        destinations = {step.destination for step in service.definition.steps}
        self.guards = dict(guards or {})
        for name in destinations - self.guards.keys():
            self.guards[name] = DownstreamGuard.create(name, FlowSettings())
        self._limit_wait = limit_wait
        self._metrics = metrics or ProtoolsMetrics()
        self.outbox_depth = 0  # as the last recovery round read it
        self._poll_interval = poll_interval
        self._faults = faults or FaultPoints()
        self._batch_size = batch_size
        self.concurrency = concurrency
        self._busy = 0  # slots reserved or delivering
        self._in_flight: dict[int, store.OutboxMessage] = {}
        lease_seconds = service.lease.seconds
        self._renew_every = lease_seconds / 3
        # A successful call is worth waiting for: retry its record for most of a lease.
        self._record_retry_seconds = record_retry_seconds or lease_seconds * 2 / 3
        self._wake = asyncio.Event()
        self._starved = False  # the last recovery round found no free slot for due work
        self._tasks: set[asyncio.Task[None]] = set()
        self.health = {name: LoopHealth(name) for name in ("recovery", "lease_renewal")}

    # --- slots -----------------------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        return self.concurrency - self._busy

    def try_reserve(self) -> bool:
        """Reserve a delivery slot for a message about to be leased to us; False when full."""
        if self._busy >= self.concurrency:
            return False
        self._busy += 1
        return True

    def release(self) -> None:
        """Give back a reserved slot that was not used."""
        self._busy -= 1
        if self._starved:  # the recovery loop left due work for want of a slot: one is free
            self._wake.set()

    def start_delivery(
        self,
        message: store.OutboxMessage,
        known: WorkflowState | None = None,
        *,
        finished: Finished | None = None,
    ) -> None:
        """Deliver ``message`` (leased to us, its slot reserved) in the background, now.
        ``known``: the workflow's state as the commit that enqueued the message left it;
        ``finished``: told, once the delivery stops, how long it spent in this replica's own
        work if it ended the workflow (None if the workflow goes on later: a retry, a parked
        step). The admission limit adapts to that time: a replica is saturated when its own
        work slows down, not when a service does (the service's own limit sees to that)."""
        task = asyncio.get_running_loop().create_task(
            self._deliver_in_slot(message, known, finished)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def wake(self) -> None:
        self._wake.set()

    async def _deliver_in_slot(
        self, message: store.OutboxMessage, known: WorkflowState | None, finished: Finished | None
    ) -> None:
        delivery, ended = Delivery(), False
        if tracing.current.get() is None:  # not started by a request: the workflow's trace
            tracing.current.set(tracing.for_workflow(message.stream_id))  # this task's context
        try:
            ended = await self.deliver(message, known, delivery)
        finally:
            self.release()
            if finished is not None:
                finished(delivery.own_seconds if ended else None)

    async def deliver(
        self,
        message: store.OutboxMessage | None,
        known: WorkflowState | None = None,
        delivery: Delivery | None = None,
    ) -> bool:
        """Deliver a message and, while each step succeeds at once, the steps after it. The
        state each commit leaves is carried to the next record, which then need not read it.
        Returns whether the workflow ended."""
        delivery = delivery or Delivery()
        while message is not None:
            current = message
            self._in_flight[current.id] = current
            try:
                message, known = await self._attempt(current, known, delivery)
            finally:
                self._in_flight.pop(current.id, None)
        return known is not None and known.terminal

    # --- one attempt -----------------------------------------------------------------------

    async def _attempt(
        self, message: store.OutboxMessage, known: WorkflowState | None, delivery: Delivery
    ) -> tuple[store.OutboxMessage | None, WorkflowState | None]:
        definition = self._service.definition
        guard = self.guards[message.destination]
        try:
            # A message not handed over by the commit before it (claimed by recovery, parked,
            # retried) may be past its workflow's deadline: ask first.
            if (message.attempts > 1 or known is None) and not await in_thread(
                self._service.may_attempt, message
            ):
                self._watchers.notify(message.stream_id)
                return None, None
            held_back = await self._hold_back(message, guard, delivery)
            if held_back is not None:
                await self._park(message, *held_back)
                return None, None
            step = definition.step(message.step)
            call = self._service.call_of(message)
            started = time.monotonic()
            try:
                replica, answer = await self._clients.send(call, message.attempts)
                # What the service answered means what the step says; no answer is a retry.
                outcome = step.interpret(answer) if isinstance(answer, Response) else answer
            except BaseException:
                guard.limiter.release(None)
                guard.breaker.abandoned()
                raise
            elapsed = time.monotonic() - started
            delivery.elsewhere += elapsed
            guard.learn(outcome, elapsed)
            elapsed_ms = elapsed * 1000
            if isinstance(outcome, Retry):
                self._metrics.retries.labels(message.destination, outcome.reason).inc()
            await self._hit("before_record")
            hold = self._hold_after(outcome, guard)
            recorded = await self._record(
                message,
                outcome,
                replica=replica,
                elapsed_ms=elapsed_ms,
                next_replica=self._clients.replica_for(call, message.attempts + 1),
                known=known,
                hold=hold,
            )
            state = recorded.state
            if hold is not None and state is not None and message.step in state.parked:
                self._count_park(message, hold.reason, hold.seconds, attempt=message.attempts + 1)
            await self._hit("after_record")
        except StorageError as error:
            # The lease runs out and the message is claimed again: nothing is lost.
            logger.warning(
                "metallica.relay_storage_error",
                extra={"workflow_id": message.stream_id, "step": message.step, "error": error.code},
            )
            return None, None
        except Exception:
            logger.exception(
                "metallica.relay_delivery_crashed",
                extra={"workflow_id": message.stream_id, "step": message.step},
            )
            return None, None  # the lease runs out and another attempt is made
        self._log_attempt(message, outcome, recorded, elapsed_ms)
        self._watchers.notify(message.stream_id, recorded.state)
        if recorded.retry_at is not None:
            self.wake()
        if recorded.finished and recorded.state is not None:
            status = "completed" if recorded.state.status == COMPLETED_STATUS else "failed"
            self._metrics.workflows.labels(status).inc()
        return recorded.message, recorded.state

    def _count_park(
        self, message: store.OutboxMessage, reason: str, delay: float, *, attempt: int
    ) -> None:
        self._metrics.parked.labels(message.destination, reason).inc()
        logger.info(
            "metallica.step_parked",
            extra={
                "workflow_id": message.stream_id,
                "step": message.step,
                "attempt": attempt,
                "reason": reason,
                "resume_in": round(delay, 3),
            },
        )

    def _hold_after(self, outcome: Outcome, guard: DownstreamGuard) -> Hold | None:
        """A failed attempt's retry, held back while the service's circuit is open (this
        failure may have opened it). Without this, the retry would wait just as long, unseen:
        the recovery loop claims no message for an open circuit, so no park would say why."""
        if not isinstance(outcome, Retry) or guard.breaker.state != OPEN:
            return None
        return Hold(*_circuit_open(guard))

    async def _hold_back(
        self, message: store.OutboxMessage, guard: DownstreamGuard, delivery: Delivery
    ) -> tuple[str, str, float] | None:
        """Whether the attempt must wait instead of calling now: ``(reason, detail, seconds)``;
        None when it may go, holding a call slot under the service's limit (the caller gives
        it back through ``guard.learn``)."""
        breaker, retry = guard.breaker, message.attempts > 1
        if not breaker.allow():
            return _circuit_open(guard)
        if retry and not guard.budget.try_spend():
            breaker.abandoned()
            return (
                "retry-budget",
                "retries to this service are over budget",
                _JITTER.uniform(*BUDGET_PARK_SECONDS),
            )
        waiting_since = time.monotonic()
        slot = await guard.limiter.acquire(self._limit_wait)
        delivery.elsewhere += time.monotonic() - waiting_since
        if not slot:
            breaker.abandoned()
            detail = f"no call slot under {guard.name}'s limit ({guard.limiter.limit})"
            return "concurrency-limit", detail, _JITTER.uniform(*LIMIT_PARK_SECONDS)
        if not retry:
            guard.budget.deposit()
        self._metrics.calls.labels(guard.name, "retry" if retry else "first").inc()
        return None

    async def _park(
        self, message: store.OutboxMessage, reason: str, detail: str, delay: float
    ) -> None:
        state = await in_thread(
            self._service.park, message, reason=reason, detail=detail, delay=delay
        )
        self._count_park(message, reason, delay, attempt=message.attempts)
        self._watchers.notify(message.stream_id, state)
        self.wake()

    async def _record(
        self,
        message: store.OutboxMessage,
        outcome: Outcome,
        *,
        replica: str,
        elapsed_ms: float,
        next_replica: str,
        known: WorkflowState | None,
        hold: Hold | None = None,
    ) -> Recorded:
        """Record an outcome, retrying in place while the database is briefly unavailable or
        busy: the call was made, and what it learnt must not be thrown away (a success lost
        here would be asked for again once the lease ran out). The lease is renewed meanwhile.
        """
        async for attempt in stamina.retry_context(
            on=(StorageUnavailable, StorageBusy),
            attempts=None,
            timeout=self._record_retry_seconds,
            wait_initial=0.05,
            wait_max=1.0,
        ):
            with attempt:
                if attempt.num > 1:
                    logger.warning(
                        "metallica.record_retried",
                        extra={"workflow_id": message.stream_id, "attempt": attempt.num},
                    )
                return await in_thread(
                    functools.partial(
                        self._service.record,
                        message,
                        outcome,
                        replica=replica,
                        elapsed_ms=elapsed_ms,
                        next_replica=next_replica,
                        known=known,
                        hold=hold,
                    )
                )
        raise AssertionError("unreachable: stamina raises once it gives up")

    def _log_attempt(
        self,
        message: store.OutboxMessage,
        outcome: Outcome,
        recorded: Recorded,
        elapsed_ms: float,
    ) -> None:
        extra = {
            "workflow_id": message.stream_id,
            "step": message.step,
            "attempt": message.attempts,
            "outcome": type(outcome).__name__,
            "reason": getattr(outcome, "reason", None),
            "elapsed_ms": round(elapsed_ms, 1),
            "fenced": recorded.fenced,
        }
        if recorded.late:
            logger.error("metallica.step_succeeded_late", extra=extra)
        else:
            logger.info("metallica.step_attempted", extra=extra)

    async def _hit(self, point: str) -> None:
        if self._faults.armed:
            await in_thread(self._faults.hit, point)

    # --- background loops ------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and deliver due messages, and renew leases in flight, until cancelled."""
        loops = {
            "recovery": (self._recover_once, self._sleep_unless_woken),
            "lease_renewal": (self._renew_once, asyncio.sleep),
        }
        async with asyncio.TaskGroup() as group:
            for name, (step, sleep) in loops.items():
                health = self.health[name]
                health.task = group.create_task(keep_running(health, step, sleep), name=name)

    async def _sleep_unless_woken(self, delay: float) -> None:
        await sleep_unless_woken(self._wake, delay)

    async def _recover_once(self) -> float:
        """Start delivering due messages, as many as there are free slots; return how long to
        sleep (a wake-up ends the sleep early: a slot freed, a retry scheduled)."""
        self._wake.clear()  # before looking, so a wake-up while we look is not lost
        open_circuits = [name for name, g in self.guards.items() if g.breaker.state == OPEN]
        summary = await in_thread(self._service.outbox_summary, open_circuits)
        self.outbox_depth = summary.depth
        self._metrics.outbox_depth.set(summary.depth)
        self._metrics.outbox_oldest_age.set(summary.oldest_age)
        # A circuit that opens again lets its parked steps be claimed: look again then.
        reopening = [self.guards[name].breaker.opens_again_in() for name in open_circuits]
        longest = min([self._poll_interval, *(wait + 0.01 for wait in reopening)])
        self._starved = self.free_slots <= 0
        if self._starved:
            return longest
        due_in = summary.due_in
        if due_in is None or due_in > 0:
            return longest if due_in is None else min(longest, due_in)
        limit = min(self._batch_size, self.free_slots)
        self._busy += limit  # reserved before the claim, so the hot path cannot overshoot
        try:
            messages = await in_thread(self._service.claim_due, limit, open_circuits)
        finally:
            self._busy -= limit
        for message in messages:
            self._busy += 1
            self.start_delivery(message)
        self._starved = len(messages) == limit  # more may be due than it took
        return 0 if messages else min(self._poll_interval, 0.1)

    async def _renew_once(self) -> float:
        """Extend the leases of every call in flight; return how long until the next time."""
        in_flight = list(self._in_flight)
        if in_flight:
            await in_thread(self._service.extend_leases, in_flight)
        return self._renew_every

    async def aclose(self, grace: float = 2.0) -> None:
        """Let in-flight deliveries finish for ``grace`` seconds, then cancel the rest (they
        resume elsewhere once their leases run out) and wait until they have stopped: a
        cancelled delivery first waits for its storage call in a thread to return
        (:func:`~metallica.threads.in_thread`), so once this returns nothing of the relay's
        still uses the database, and its owner may close it."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
