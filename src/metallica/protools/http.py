"""protools HTTP API: password-creation commands, workflow status, workflow events.

Only HTTP here: each route reads its request, hands plain values to the intake of new commands
(:mod:`metallica.protools.intake`), the workflow service, or the presentation of workflows and
their events (:mod:`metallica.protools.history`), and answers. A request that waits on a
workflow waits with :func:`metallica.protools.watchers.wait_for_state`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metallica.config import CALLEE_NAMES
from metallica.errors import NotFound
from metallica.faults import FaultPoints
from metallica.problems import MEDIA_TYPE
from metallica.protools import board, engine, history, log, password_workflow, stream
from metallica.protools.clients import ServiceClients
from metallica.protools.console import health as console_health
from metallica.protools.console.routes import ConsoleSettings, console_routes
from metallica.protools.flow import Admission, DownstreamGuard
from metallica.protools.intake import Intake
from metallica.protools.loops import LoopHealth, keep_running
from metallica.protools.metrics import ProtoolsMetrics
from metallica.protools.openapi import openapi_document
from metallica.protools.relay import Relay
from metallica.protools.service import WorkflowService
from metallica.protools.settings import ProtoolsSettings
from metallica.protools.subscription_routes import subscription_routes
from metallica.protools.subscriptions import Subscriptions
from metallica.protools.tailer import LogTailer
from metallica.protools.watchers import Watchers, wait_for_state
from metallica.storage.errors import StorageError
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
    known_query,
    prefer_wait,
    uuid_in_path,
)

logger = logging.getLogger(__name__)

# Where a test may crash or stall protools: after a command's commit, around an outcome's commit.
FAULT_POINTS = ("after_accept", "before_record", "after_record")


# How long the relay's loops may take to end once cancelled (their storage calls in threads
# finish first, each bounded by the database's timeouts).
LOOPS_STOP_SECONDS = 30.0
EXPIRY_INTERVAL_MAX = 300.0


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel the relay's loops and wait until they have ended: a bounded wait, and a loud
    failure past it (the database must not be closed under a loop that still runs)."""
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=LOOPS_STOP_SECONDS)
    if not done:
        raise RuntimeError(f"the relay's loops still ran {LOOPS_STOP_SECONDS:g} s after cancel")
    if not task.cancelled() and task.exception() is not None:
        logger.error("metallica.relay_loops_failed", exc_info=task.exception())


async def _expire_commands(service: WorkflowService, retention: float) -> float:
    """One round of the command store's retention; the seconds until the next (a tenth of
    the retention, five minutes at most)."""
    await in_thread(service.expire_commands, retention)
    return min(EXPIRY_INTERVAL_MAX, retention / 10)


async def _report_health(state: Any) -> float:
    """One report of this replica's health to the board; the seconds until the next."""
    service: WorkflowService = state.service
    snapshot = await console_health.snapshot(state)
    await in_thread(board.publish, service.database, service.replica_id, snapshot)
    return board.REPORT_SECONDS


async def _sign_off(service: WorkflowService) -> None:
    """Tell the board this replica stops; a database that cannot be told leaves it silent."""
    try:
        await in_thread(board.sign_off, service.database, service.replica_id)
    except StorageError as error:
        logger.warning("metallica.board_sign_off_failed", extra={"error": error.code})


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
            commit_batch=settings.commit_batch,
        )
        clients = ServiceClients(
            {"generator": settings.generator_urls, "mailer": settings.mailer_urls},
            token=settings.outgoing_token,
            connect_timeout=settings.connect_timeout,
            call_timeout=settings.call_timeout,
            max_connections=settings.relay_concurrency,
        )
        guards = {name: DownstreamGuard.create(name, settings.flow) for name in CALLEE_NAMES}
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
        event_log = log.EventLog(database, definition.secret_fields)
        tailer = LogTailer(
            database,
            event_log,
            poll_interval=settings.log_poll_interval,
            wake=watchers.any_change,
            grew=watchers.log_grew,
        )
        metrics.watch(admission, relay.guards)
        metrics.watch_log(tailer)
        metrics.watch_writer(service.writer)
        app.state.service = service
        app.state.relay = relay
        app.state.admission = admission
        app.state.downstream = {
            "generator": settings.generator_urls,
            "mailer": settings.mailer_urls,
        }
        app.state.log = event_log
        app.state.subscriptions = Subscriptions(database)
        metrics.watch_groups(app.state.subscriptions.all)
        app.state.tailer = tailer
        app.state.intake = Intake(admission, service, relay, faults=faults, metrics=metrics)
        app.state.readiness_checks = {
            "database": database_check(database),
            **{f"relay_{name}": health_check(loop) for name, loop in relay.health.items()},
            "log_tailer": health_check(tailer.health),
        }
        # Shutdown runs these backwards, once the server stopped accepting: cancel the relay's
        # loops, stop its deliveries, close the HTTP clients, then (the stack's first entry)
        # the database. Each cancelled task first waits for its call in a thread to return,
        # so the database is closed only once nothing uses it.
        stack.push_async_callback(clients.aclose)
        stack.push_async_callback(relay.aclose)
        loop_task = asyncio.get_running_loop().create_task(relay.run())
        stack.push_async_callback(_cancel, loop_task)
        tailer_task = asyncio.get_running_loop().create_task(tailer.run())
        stack.push_async_callback(_cancel, tailer_task)
        expiry = LoopHealth("command_expiry")  # logged when it fails, not a readiness check
        expiry_task = asyncio.get_running_loop().create_task(
            keep_running(
                expiry,
                functools.partial(_expire_commands, service, settings.command_retention),
                asyncio.sleep,
            )
        )
        stack.push_async_callback(_cancel, expiry_task)
        reporting = LoopHealth("health_board")  # logged when it fails, not a readiness check
        board_task = asyncio.get_running_loop().create_task(
            keep_running(reporting, functools.partial(_report_health, app.state), asyncio.sleep)
        )
        stack.push_async_callback(_sign_off, service)  # once the reports have stopped
        stack.push_async_callback(_cancel, board_task)
        stack.callback(tailer.close)  # first: the streams end, saying why
        logger.info("metallica.protools_started", extra={"replica": replica_id})

    def answer(state: engine.WorkflowState, *, creating: bool) -> Response:
        body = history.representation(state, definition)
        if state.status == engine.RUNNING and creating:
            location = f"/v1/workflows/{state.workflow_id}"
            return JSONResponse(body, 202, headers={"Location": location})
        if state.status == engine.FAILED_STATUS and creating and state.error is not None:
            problem = {**state.error, "workflow_id": state.workflow_id}
            status = history.client_status(state.error)
            return JSONResponse(problem, status, media_type=MEDIA_TYPE)
        return JSONResponse(body, 200)

    async def create_password(request: Request) -> Response:
        key = idempotency_key(request)
        service: WorkflowService = request.app.state.service
        intake: Intake = request.app.state.intake
        # Admission first, from the headers alone: a refusal reads no body and no database.
        client: str = request.state.caller
        intake.limit_rate(client)
        wait = prefer_wait(request, default=settings.wait_default, maximum=settings.wait_max)
        waited_since = asyncio.get_running_loop().time()
        # The access line says how long the command queued, why it was refused, and (joining
        # this request's trace to the workflow's, see relay.py) the workflow it started.
        log_fields: dict[str, Any] = {}
        request.state.log_fields = log_fields
        accepted = await intake.accept(
            key,
            client,
            lambda: json_object(request, fields=("username", "email")),
            patience=wait,
            log=log_fields,
        )
        wait -= asyncio.get_running_loop().time() - waited_since  # the queue's time counts
        log_fields["workflow_id"] = accepted.workflow_id
        known = accepted.state
        if known is None:  # a replay: whose is it?
            known = await in_thread(service.load, accepted.workflow_id)
            assert known is not None, "a recorded command has its workflow"
            history.owned_by(known, client)
        state = await wait_for_state(
            service.load, watchers, accepted.workflow_id, max(0.0, wait), known=known
        )
        assert state is not None
        return answer(state, creating=True)

    async def get_workflow(request: Request) -> Response:
        wait = prefer_wait(request, default=history.READ_WAIT_DEFAULT, maximum=settings.wait_max)
        service: WorkflowService = request.app.state.service
        state = await wait_for_state(
            service.load, watchers, uuid_in_path(request, "workflow_id"), wait
        )
        if state is None:
            raise NotFound("no workflow with this id")
        history.owned_by(state, request.state.caller)
        return answer(state, creating=False)

    async def list_workflows(request: Request) -> Response:
        known_query(request, *history.LISTING_PARAMETERS)
        status, before, limit = history.listing_query(request.query_params)
        service: WorkflowService = request.app.state.service
        found = await in_thread(
            service.list_workflows,
            request.state.caller,
            status=status,
            before=before,
            limit=limit,
        )
        return JSONResponse(history.workflows_page(found, limit))

    async def get_events(request: Request) -> Response:
        service: WorkflowService = request.app.state.service
        workflow_id = uuid_in_path(request, "workflow_id")
        known_query(request, *history.EVENTS_PARAMETERS)
        view = history.events_view(request.query_params)
        events = await in_thread(service.history, workflow_id)
        if not events:
            raise NotFound("no workflow with this id")
        history.owned_by(engine.fold(events[0].stream_id, events[:1]), request.state.caller)
        listed = history.listing(events, definition.secret_fields, view=view)
        return JSONResponse({"events": listed})

    def reader_of(request: Request) -> log.Reader:
        client: str = request.state.caller
        return log.Reader(client, whole_log=client in settings.log_readers)

    async def get_log(request: Request) -> Response:
        known_query(request, *log.LOG_PARAMETERS)
        query = log.log_query(request.query_params)
        event_log: log.EventLog = request.app.state.log
        page = await in_thread(event_log.page, query, reader_of(request))
        return JSONResponse(
            {
                "events": [event_log.entry(logged) for logged in page.events],
                "head": page.head,
                "next": page.next,
            }
        )

    async def stream_log(request: Request) -> Response:
        known_query(request, *log.STREAM_PARAMETERS)
        query = log.log_query(request.query_params, paged=False)
        event_log: log.EventLog = request.app.state.log
        head = await in_thread(event_log.head)
        after = log.resume_after(query.after, request.headers.get("last-event-id"), head)
        query = dataclasses.replace(query, after=after)
        events = stream.follow(
            request.app.state.tailer,
            event_log,
            query,
            reader_of(request),
            capacity=settings.stream_buffer,
            heartbeat=settings.stream_heartbeat,
            max_duration=settings.stream_max_duration,
            metrics=metrics,
        )
        return EventSourceResponse(
            events,
            ping=settings.stream_heartbeat,
            send_timeout=settings.stream_send_timeout,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

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
        Route("/v1/events", authenticated(token, get_log), methods=["GET"]),
        Route("/v1/events/stream", authenticated(token, stream_log), methods=["GET"]),
        *subscription_routes(
            token,
            settings.log_readers,
            lambda request: request.app.state.log,
            lambda request: request.app.state.subscriptions,
            lambda request: request.app.state.tailer,
            poll_interval=settings.log_poll_interval,
        ),
        *fault_routes(token, faults),
        *console_routes(
            ConsoleSettings(
                credentials=token,
                readers=settings.log_readers,
                secret_fields=definition.secret_fields,
                stream_buffer=settings.stream_buffer,
                stream_heartbeat=settings.stream_heartbeat,
                stream_max_duration=settings.stream_max_duration,
                stream_send_timeout=settings.stream_send_timeout,
            )
        ),
    ]
    return service_app(
        "protools",
        routes,
        lifespan,
        max_in_flight=settings.max_in_flight,
        metrics=metrics,
        openapi=openapi_document(),
    )
