"""protools HTTP API: password-creation commands, workflow status, workflow events."""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metallica.errors import (
    Forbidden,
    MetallicaError,
    NotFound,
    Overloaded,
    TooManyRequests,
)
from metallica.faults import FaultPoints
from metallica.overload.queue import BACKLOG_FULL, CODEL, QUEUE_TIMEOUT
from metallica.overload.rates import retry_after_seconds
from metallica.problems import MEDIA_TYPE
from metallica.protools import engine, password_workflow
from metallica.protools.clients import ServiceClients
from metallica.protools.flow import Admission, Admitted, DownstreamGuard
from metallica.protools.metrics import ProtoolsMetrics
from metallica.protools.openapi import openapi_document
from metallica.protools.reads import READ_WAIT_DEFAULT, events_view, listing_query
from metallica.protools.relay import Relay, Watchers
from metallica.protools.service import Accepted, WorkflowService
from metallica.protools.settings import ProtoolsSettings
from metallica.threads import in_thread
from metallica.web.app import (
    authenticated,
    database_check,
    health_check,
    method_not_allowed,
    migrated_database,
    service_app,
)
from metallica.web.faults import fault_routes
from metallica.web.requests import (
    idempotency_key,
    json_object,
    prefer_wait,
    uuid_in_path,
)

logger = logging.getLogger(__name__)

# Where a test may crash or stall protools: after a command's commit, around an outcome's commit.
FAULT_POINTS = ("after_accept", "before_record", "after_record")
# How often a waiter re-reads a workflow that another replica may be driving.
WAITER_POLL_SECONDS = 0.25
# Why a new command is refused, by the admission's reason; and when to try again, seconds.
REFUSALS = {
    QUEUE_TIMEOUT: "this replica is at its limit of workflows in progress, and no place came "
    "free within the command's wait",
    CODEL: "this replica is overloaded: commands have been queueing longer than it can serve",
    BACKLOG_FULL: "too many workflows are parked waiting for a service, or queued",
}
REDACTED = "***"


def redact(value: Any, secret_fields: frozenset[str]) -> Any:
    """``value`` with the string of every field in ``secret_fields`` masked, at any depth, for
    event listings (the password workflow's: the password and the mail's body)."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if key in secret_fields and isinstance(item, str)
            else redact(item, secret_fields)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, secret_fields) for item in value]
    return value


def representation(
    state: engine.WorkflowState, definition: engine.WorkflowDefinition
) -> dict[str, Any]:
    """A workflow as clients see it."""
    body: dict[str, Any] = {"workflow_id": state.workflow_id, "status": state.status}
    if state.status == engine.COMPLETED_STATUS:
        body |= definition.result(state)
    elif state.status == engine.FAILED_STATUS:
        body["error"] = state.error
    return body


def owned_by(state: engine.WorkflowState | None, client: str) -> None:
    """Raise :class:`Forbidden` unless ``client`` started the workflow (or nobody is recorded
    as its client: workflows started before clients had names)."""
    if state is not None and state.client is not None and state.client != client:
        raise Forbidden("this workflow was started by another client")


def client_status(error: Mapping[str, Any]) -> int:
    """The HTTP status a failed workflow's creator gets: the problem's own, when it is one."""
    status = error.get("status")
    return status if isinstance(status, int) and 400 <= status <= 599 else 500


async def wait_for_state(
    load: Callable[[str], engine.WorkflowState | None],
    watchers: Watchers,
    workflow_id: str,
    seconds: float,
    *,
    poll: float = WAITER_POLL_SECONDS,
    known: engine.WorkflowState | None = None,
) -> engine.WorkflowState | None:
    """The workflow's state once terminal, or when ``seconds`` have passed.

    Woken at once by changes made here, which carry the new state (no read needed); ``poll``
    covers changes another replica makes. The watch is registered before the first read, so a
    change between a read and the wait that follows still wakes it. ``known``: the state the
    caller just committed, in place of the first read.
    """
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    with watchers.watch(workflow_id) as watch:
        state = known if known is not None else await in_thread(load, workflow_id)
        while state is not None and not state.terminal:
            remaining = until - loop.time()
            if remaining <= 0:
                break
            with suppress(TimeoutError):
                await asyncio.wait_for(watch.changed.wait(), min(remaining, poll))
            watch.changed.clear()
            notified, watch.state = watch.state, None
            state = notified if notified is not None else await in_thread(load, workflow_id)
    return state


def listing(
    events: Sequence[engine.RecordedEvent], secret_fields: frozenset[str], *, view: str = "all"
) -> list[dict[str, Any]]:
    """A workflow's events as the events endpoint lists them, secret fields masked. In the
    ``compact`` view a run of failed attempts is one ``StepAttemptsFailed`` entry: the
    ``version`` and ``time`` of its first event, its summary as ``data`` (with the
    ``last_version`` and ``last_time`` of its last event)."""
    entries = engine.compact(events) if view == "compact" else events
    listed = []
    for entry in entries:
        if isinstance(entry, engine.FailureRun):
            first, data = entry.first, entry.summary() | {"last_time": _iso(entry.last.recorded_at)}
            kind = engine.ATTEMPTS_FAILED
        else:
            first, data, kind = entry, dict(entry.data), entry.type
        listed.append(
            {
                "version": first.version,
                "type": kind,
                "time": _iso(first.recorded_at),
                "data": redact(data, secret_fields),
            }
        )
    return listed


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(
        timespec="milliseconds"
    )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def create_app(settings: ProtoolsSettings) -> Starlette:
    replica_id = settings.replica_id or f"protools-{uuid.uuid4().hex[:8]}"
    definition = password_workflow.definition(  # a bad mail domain fails here, at start
        deadline_seconds=settings.workflow_deadline,
        retry=engine.RetryPolicy(settings.retry_initial, settings.retry_max),
        mail_domain=settings.mail_domain,
    )
    watchers = Watchers()
    faults = FaultPoints(FAULT_POINTS, enabled=settings.faults_enabled)
    metrics = ProtoolsMetrics()
    admission = Admission(settings.flow)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await _start(app, stack)
            yield

    async def _start(app: Starlette, stack: AsyncExitStack) -> None:
        database = await stack.enter_async_context(
            migrated_database(
                settings.database_url,
                "protools",
                settings.database_timeouts,
                settings.database_pool_size,
                migrate_at_start=settings.migrate_at_start,
            )
        )
        service = WorkflowService(
            database,
            definition,
            replica_id=replica_id,
            lease_seconds=settings.lease_seconds,
            keys=settings.keys,
        )
        clients = ServiceClients(
            {"generator": settings.generator_urls, "mailer": settings.mailer_urls},
            token=settings.outgoing_token,
            connect_timeout=settings.connect_timeout,
            call_timeout=settings.call_timeout,
            max_connections=settings.relay_concurrency,
        )
        guards = {
            name: DownstreamGuard.create(name, settings.flow) for name in ("generator", "mailer")
        }
        relay = Relay(
            service,
            clients,
            watchers,
            poll_interval=settings.poll_interval,
            faults=faults,
            concurrency=settings.relay_concurrency,
            guards=guards,
            limit_wait=settings.call_timeout,
            metrics=metrics,
        )
        metrics.watch(admission, relay.guards)
        app.state.service, app.state.relay = service, relay
        app.state.readiness_checks = {
            "database": database_check(database),
            **{f"relay_{name}": health_check(loop) for name, loop in relay.health.items()},
        }
        # Shutdown runs these backwards, once the server stopped accepting: cancel the relay's
        # loops, stop its deliveries, close the HTTP clients, then (the stack's first entry)
        # the database. Each cancelled task first waits for its call in a thread to return,
        # so the database is closed only once nothing uses it.
        stack.push_async_callback(clients.aclose)
        stack.push_async_callback(relay.aclose)
        loop_task = asyncio.get_running_loop().create_task(relay.run())
        stack.push_async_callback(_cancel, loop_task)
        logger.info("metallica.protools_started", extra={"replica": replica_id})

    async def start_workflow(
        service: WorkflowService,
        relay: Relay,
        key: str,
        body: Mapping[str, Any],
        client: str,
        queued: float,
    ) -> Accepted:
        """Accept an admitted command. A new workflow's first call is leased to us only if we
        have a slot to make it now; otherwise it is due at once for whichever relay has one.
        Its place under the admission limit is given back when our delivery of it stops."""
        reserved = relay.try_reserve()
        try:
            accepted = await in_thread(
                service.accept, key, body, lease=reserved, client=client, queued=queued
            )
            if faults.armed:
                await in_thread(faults.hit, "after_accept")
        except BaseException:
            if reserved:
                relay.release()
            admission.finished(None)
            raise
        if accepted.message is not None:
            metrics.workflows.labels("started").inc()
            admission.remember(key)
        if accepted.message is not None and reserved:
            relay.start_delivery(accepted.message, accepted.state, finished=admission.finished)
            return accepted
        if reserved:
            relay.release()
        else:
            relay.wake()
        admission.finished(None)
        return accepted

    def answer(state: engine.WorkflowState, *, creating: bool) -> Response:
        body = representation(state, definition)
        if state.status == engine.RUNNING and creating:
            location = f"/v1/workflows/{state.workflow_id}"
            return JSONResponse(body, 202, headers={"Location": location})
        if state.status == engine.FAILED_STATUS and creating and state.error is not None:
            problem = {**state.error, "workflow_id": state.workflow_id}
            return JSONResponse(problem, client_status(state.error), media_type=MEDIA_TYPE)
        return JSONResponse(body, 200)

    def shed(reason: str, error: MetallicaError) -> MetallicaError:
        metrics.shed.labels(reason).inc()
        return error

    async def admit(request: Request, relay: Relay, patience: float) -> Admitted:
        """A place for a new command, waiting in the queue for one if need be (at most
        ``patience`` seconds); 503 with ``Retry-After`` when refused. The access line says
        how long it queued, and why it was refused."""
        admitted = await admission.admit(relay.outbox_depth, patience)
        request.state.log_fields = {"queued_ms": round(admitted.queued * 1000, 1)}
        if admitted.refusal is not None:
            request.state.log_fields["refusal"] = admitted.refusal
            retry_after = retry_after_seconds(admitted.retry_after)
            detail = REFUSALS[admitted.refusal]
            raise shed(admitted.refusal, Overloaded(detail, retry_after=retry_after))
        return admitted

    async def create_password(request: Request) -> Response:
        key = idempotency_key(request)
        service: WorkflowService = request.app.state.service
        relay: Relay = request.app.state.relay
        # Admission first, from the headers alone: a refusal reads no body and no database.
        client: str = request.state.caller
        rate_wait = admission.rate_wait(client)
        if rate_wait > 0:
            raise shed("client-rate", TooManyRequests(retry_after=retry_after_seconds(rate_wait)))
        wait = prefer_wait(request, default=settings.wait_default, maximum=settings.wait_max)
        waited_since = asyncio.get_running_loop().time()
        # A replay of a key accepted here skips the queue: it is a read.
        admitted = None if admission.knows(key) else await admit(request, relay, wait)
        try:
            body = await json_object(request, fields=("username", "email"))
        except BaseException:  # a body refused gives back the place it was admitted to
            if admitted is not None:
                admission.finished(None)
            raise
        accepted = None
        if admitted is None:
            accepted = await in_thread(service.find_accepted, key, body)
            if accepted is None:  # accepted here, then lost: a new command after all
                admitted = await admit(request, relay, wait)
        if accepted is None:
            assert admitted is not None
            accepted = await start_workflow(service, relay, key, body, client, admitted.queued)
        wait -= asyncio.get_running_loop().time() - waited_since  # the queue's time counts
        # On the access line: joins this request's trace to the workflow's (see relay.py).
        request.state.log_fields = {
            **getattr(request.state, "log_fields", {}),
            "workflow_id": accepted.workflow_id,
        }
        known = accepted.state
        if known is None:  # a replay: whose is it?
            known = await in_thread(service.load, accepted.workflow_id)
            assert known is not None, "a recorded command has its workflow"
            owned_by(known, client)
        state = await wait_for_state(
            service.load, watchers, accepted.workflow_id, max(0.0, wait), known=known
        )
        assert state is not None
        return answer(state, creating=True)

    async def get_workflow(request: Request) -> Response:
        wait = prefer_wait(request, default=READ_WAIT_DEFAULT, maximum=settings.wait_max)
        service: WorkflowService = request.app.state.service
        state = await wait_for_state(
            service.load, watchers, uuid_in_path(request, "workflow_id"), wait
        )
        if state is None:
            raise NotFound("no workflow with this id")
        owned_by(state, request.state.caller)
        return answer(state, creating=False)

    async def list_workflows(request: Request) -> Response:
        status, before, limit = listing_query(request)
        service: WorkflowService = request.app.state.service
        found = await in_thread(
            service.list_workflows,
            request.state.caller,
            status=status,
            before=before,
            limit=limit,
        )
        return JSONResponse(
            {
                "workflows": [
                    {
                        "workflow_id": summary.workflow_id,
                        "status": summary.status,
                        "username": summary.input.get("username"),
                        "started_at": _iso(summary.started_at),
                    }
                    for summary in found
                ],
                "next": str(found[-1].position) if len(found) == limit else None,
            }
        )

    async def get_events(request: Request) -> Response:
        service: WorkflowService = request.app.state.service
        workflow_id = uuid_in_path(request, "workflow_id")
        view = events_view(request)
        events = await in_thread(service.history, workflow_id)
        if not events:
            raise NotFound("no workflow with this id")
        owned_by(engine.fold(events[0].stream_id, events[:1]), request.state.caller)
        return JSONResponse({"events": listing(events, definition.secret_fields, view=view)})

    token = settings.client_credentials
    routes = [
        Route(
            "/v1/workflows/password-creation",
            authenticated(token, create_password),
            methods=["POST"],
        ),
        Route("/v1/workflows/password-creation", method_not_allowed("POST"), methods=["GET"]),
        Route("/v1/workflows", authenticated(token, list_workflows), methods=["GET"]),
        Route("/v1/workflows/{workflow_id}", authenticated(token, get_workflow), methods=["GET"]),
        Route(
            "/v1/workflows/{workflow_id}/events", authenticated(token, get_events), methods=["GET"]
        ),
        *fault_routes(token, faults),
    ]
    return service_app(
        "protools",
        routes,
        lifespan,
        max_in_flight=settings.max_in_flight,
        metrics=metrics,
        openapi=openapi_document(),
    )
