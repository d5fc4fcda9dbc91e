"""A new command's way in, from its request to its workflow's start.

Admission first (:class:`~metallica.protools.flow.Admission`), from the headers alone: the
client's rate (429), then a place under the admission limit, waiting in the queue for one if
need be (503 with ``Retry-After`` when refused); a replay of a key accepted here lately skips
the queue (it is a read). Then the command is accepted (its command, first events and first
call committed at once, :meth:`WorkflowService.accept`), leased to this replica when a delivery
slot of the relay was free to make the first call now: the workflow is then handed to the relay
(:meth:`Relay.start_delivery`), with its slot and its place. Otherwise the call is due now for
whichever relay has a free slot.

**Each resource is given back exactly once.** A place under the admission limit is a
:class:`Place`, a delivery slot a :class:`Slot`, each held in a ``with`` block from the moment
it is taken: whatever path leaves the block (a body refused after admission, an error, a
cancellation, a workflow that goes on elsewhere) gives it back, and giving back twice does
nothing. The one other way out is the hand-over to the relay's delivery, which gives both back
when it stops (the place with the time the workflow took, a sample for the adaptive limit); a
handed-over resource is no longer the command's to give back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from metallica.errors import MetallicaError, Overloaded, TooManyRequests
from metallica.faults import FaultPoints
from metallica.overload.queue import BACKLOG_FULL, CODEL, QUEUE_TIMEOUT
from metallica.overload.rates import retry_after_seconds
from metallica.protools import engine, store
from metallica.protools.flow import Admission
from metallica.protools.metrics import ProtoolsMetrics
from metallica.protools.relay import Finished, Relay
from metallica.protools.service import Accepted, WorkflowService
from metallica.threads import in_thread

# Why a new command is refused, by the admission's reason.
REFUSALS = {
    QUEUE_TIMEOUT: "this replica is at its limit of workflows in progress, and no place came "
    "free within the command's wait",
    CODEL: "this replica is overloaded: commands have been queueing longer than it can serve",
    BACKLOG_FULL: "too many workflows are parked waiting for a service, or queued",
}
CLIENT_RATE = "client-rate"

# Reads the command's body, or raises the 4xx problem that refuses it.
ReadBody = Callable[[], Awaitable[Mapping[str, Any]]]


class Place:
    """A command's place under the admission limit, from its admission until its workflow leaves
    this replica's hands: given back by :meth:`release` (at the end of its ``with`` block),
    unless it was handed over to the workflow's delivery (:meth:`hand_over`)."""

    def __init__(self, admission: Admission, queued: float) -> None:
        self.queued = queued  # the seconds the command waited for it
        self._admission: Admission | None = admission

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the place back now (the workflow goes on elsewhere, or never started); nothing
        if it was given back or handed over already."""
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.finished(None)

    def hand_over(self) -> Finished:
        """What gives the place back, for the delivery that takes it over to call when it stops
        (with the time the workflow took, if it ended it)."""
        admission, self._admission = self._admission, None
        assert admission is not None, "a place is handed over once, and only if held"
        return admission.finished


class Slot:
    """A delivery slot of the relay, reserved for a new workflow's first call if one is free
    (``held``): given back by :meth:`release` (at the end of its ``with`` block), unless a
    delivery started in it (:meth:`start_delivery`), which gives it back when it stops."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self.held = relay.try_reserve()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def release(self) -> None:
        held, self.held = self.held, False
        if held:
            self._relay.release()

    def start_delivery(
        self, message: store.OutboxMessage, state: engine.WorkflowState | None, place: Place
    ) -> None:
        """Deliver ``message`` in this slot, now; the delivery gives back the slot and
        ``place`` when it stops."""
        assert self.held, "a delivery starts in a slot held"
        self.held = False
        self._relay.start_delivery(message, state, finished=place.hand_over())


class Intake:
    """What happens to a new command between its request and its workflow's start. Its
    methods take plain values; ``log``: the request's access-line fields, where the admission
    says how long the command queued (``queued_ms``) and why it was refused (``refusal``)."""

    def __init__(
        self,
        admission: Admission,
        service: WorkflowService,
        relay: Relay,
        *,
        faults: FaultPoints,
        metrics: ProtoolsMetrics,
    ) -> None:
        self._admission = admission
        self._service = service
        self._relay = relay
        self._faults = faults
        self._metrics = metrics

    def limit_rate(self, client: str) -> None:
        """A 429 ``client-rate`` when ``client`` sends commands faster than its rate allows: at
        once, before anything else is read (no body, no database)."""
        wait = self._admission.rate_wait(client)
        if wait > 0:
            raise self._shed(CLIENT_RATE, TooManyRequests(retry_after=retry_after_seconds(wait)))

    async def accept(
        self,
        key: str,
        client: str,
        read_body: ReadBody,
        *,
        patience: float,
        log: MutableMapping[str, Any],
    ) -> Accepted:
        """The workflow of the command with ``key``: started now, or, for a replay, the one its
        key started. A new command is admitted before its body is read (``read_body``), waiting
        at most ``patience`` seconds for a place."""
        if self._admission.knows(key):  # a replay of a key accepted here skips the queue
            body = await read_body()
            accepted = await in_thread(self._service.find_accepted, key, body)
            if accepted is not None:
                return accepted
            # accepted here, then lost: a new command after all
            with await self._admit(patience, log) as place:
                return await self._start(place, key, body, client)
        with await self._admit(patience, log) as place:
            body = await read_body()  # a body refused gives back the place admitted to
            return await self._start(place, key, body, client)

    async def _admit(self, patience: float, log: MutableMapping[str, Any]) -> Place:
        """A place for a new command, waiting in the queue for one if need be (at most
        ``patience`` seconds); 503 with ``Retry-After`` when refused."""
        admitted = await self._admission.admit(self._relay.outbox_depth, patience)
        log["queued_ms"] = round(admitted.queued * 1000, 1)
        if admitted.refusal is not None:
            log["refusal"] = admitted.refusal
            retry_after = retry_after_seconds(admitted.retry_after)
            detail = REFUSALS[admitted.refusal]
            raise self._shed(admitted.refusal, Overloaded(detail, retry_after=retry_after))
        return Place(self._admission, admitted.queued)

    async def _start(
        self, place: Place, key: str, body: Mapping[str, Any], client: str
    ) -> Accepted:
        """Accept an admitted command. A new workflow's first call is leased to us only if we
        have a slot to make it now, and its delivery then takes over the slot and ``place``;
        otherwise it is due at once for whichever relay has one (and the place is given back by
        the caller's ``with`` block, as on every other way out)."""
        with Slot(self._relay) as slot:
            accepted = await in_thread(
                self._service.accept,
                key,
                body,
                lease=slot.held,
                client=client,
                queued=place.queued,
            )
            if self._faults.armed:
                await in_thread(self._faults.hit, "after_accept")
            if accepted.message is not None:
                self._metrics.workflows.labels("started").inc()
                self._admission.remember(key)
            if not slot.held:
                self._relay.wake()
            elif accepted.message is not None:
                slot.start_delivery(accepted.message, accepted.state, place)
            return accepted

    def _shed(self, reason: str, error: MetallicaError) -> MetallicaError:
        self._metrics.shed.labels(reason).inc()
        return error
