"""The console's HTTP side: its pages, the fragments their script refreshes, its live stream.

Server-rendered (Jinja2, every value escaped), with one small script of our own
(``static/console.js``) that follows the log's stream and swaps fragments in: no build step,
nothing fetched from elsewhere. Every answer carries a strict Content-Security-Policy (scripts and
styles from this origin only, no inline script), and is never cached.

Reading needs a session (:mod:`.session`): a page without one sends the browser to the login
page; a fragment or the stream answers 401. Changing anything (logging out) needs the session's
CSRF token too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from metallica.errors import BadRequest, PositionPastHead, UnknownGroup
from metallica.protools import engine, history, log, stream
from metallica.protools.console import health, timeline
from metallica.protools.console.session import (
    COOKIE,
    LIFETIME,
    Session,
    csrf_token,
    csrf_valid,
    open_session,
    read_session,
)
from metallica.protools.service import WorkflowService
from metallica.protools.subscriptions import Subscriptions
from metallica.threads import in_thread
from metallica.web.auth import Credentials

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
PREFIX = "/console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
PAGE_SIZE = 50
SEARCH_MAX = 64
# The least seconds between two writes of a console's stream: the pages refresh at most every
# 200 ms anyway, and each write goes down the HTTP stack's send chain whatever it carries.
STREAM_PACE = 0.1
FORM_MAX = 4096  # bytes of a login or logout form
STATUSES = ("", "running", "completed", "failed")
LIVE_TYPES = (engine.STARTED, engine.COMPLETED, engine.FAILED)  # what changes the list
EVENT_TYPES = (
    engine.STARTED,
    engine.ATTEMPT_FAILED,
    engine.SUCCEEDED,
    engine.SUCCEEDED_LATE,
    engine.PARKED,
    engine.COMPLETED,
    engine.FAILED,
)

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class ConsoleSettings:
    """What the console needs of protools' settings."""

    credentials: Credentials
    readers: frozenset[str]
    secret_fields: frozenset[str]
    stream_buffer: int
    stream_heartbeat: float
    stream_max_duration: float
    stream_send_timeout: float
    clock: Callable[[], float] = field(default=time.time)


def console_routes(settings: ConsoleSettings) -> list[BaseRoute]:
    """The console's routes, to mount in protools' app (which holds the service, the log, the
    tailer and the subscriptions on ``app.state``)."""
    templates = Jinja2Templates(directory=HERE / "templates")

    def session_of(request: Request) -> Session | None:
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        return read_session(
            settings.credentials, cookie, readers=settings.readers, now=settings.clock()
        )

    def secured(response: Response) -> Response:
        response.headers.update(HEADERS)
        return response

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        session: Session | None = context.get("session")
        base = {
            "prefix": PREFIX,
            "csrf": csrf_token(settings.credentials, session) if session else "",
        }
        return secured(
            templates.TemplateResponse(request, name, {**base, **context}, status_code=status)
        )

    def page(endpoint: Callable[[Request, Session], Awaitable[Response]]) -> Endpoint:
        """A page: its session, or the login page."""

        async def guarded(request: Request) -> Response:
            session = session_of(request)
            if session is None:
                return secured(RedirectResponse(f"{PREFIX}/login", 303))
            return await endpoint(request, session)

        return guarded

    def fragment(endpoint: Callable[[Request, Session], Awaitable[Response]]) -> Endpoint:
        """A fragment or the stream: its session, or 401."""

        async def guarded(request: Request) -> Response:
            session = session_of(request)
            if session is None:
                return secured(PlainTextResponse("log in to the console first", 401))
            return await endpoint(request, session)

        return guarded

    async def form_of(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > FORM_MAX:
            return {}
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
        return {name: values[0] for name, values in fields.items()}

    # --- logging in and out ------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        if session_of(request) is not None:
            return secured(RedirectResponse(f"{PREFIX}/workflows", 303))
        return render(request, "login.html", {"error": ""})

    async def login(request: Request) -> Response:
        presented = (await form_of(request)).get("token", "").strip()
        opened = open_session(
            settings.credentials, presented, readers=settings.readers, now=settings.clock()
        )
        if opened is None:
            logger.warning("metallica.console_login_refused")
            error = "This token cannot open the console: it must be a log reader's."
            return render(request, "login.html", {"error": error}, status=401)
        session, cookie = opened
        logger.info("metallica.console_login", extra={"reader": session.reader})
        response = RedirectResponse(f"{PREFIX}/workflows", 303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(LIFETIME),
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return secured(response)

    async def forged(request: Request, session: Session) -> dict[str, str] | None:
        """The form, if it carries the session's CSRF token; None (and a warning) if not."""
        form = await form_of(request)
        if csrf_valid(settings.credentials, session, form.get("csrf", "")):
            return form
        logger.warning(
            "metallica.console_csrf_refused",
            extra={"reader": session.reader, "path": request.url.path},
        )
        return None

    def refused() -> Response:
        return secured(PlainTextResponse("a form of this console's is needed", 403))

    async def logout(request: Request, session: Session) -> Response:
        if await forged(request, session) is None:
            return refused()
        logger.info("metallica.console_logout", extra={"reader": session.reader})
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return secured(response)

    # --- workflows ---------------------------------------------------------------------------

    def listing_filters(request: Request) -> tuple[str, str, int | None]:
        query = request.query_params
        status = query.get("status", "")
        status = status if status in STATUSES else ""
        search = query.get("q", "").strip()[:SEARCH_MAX]
        before_text = query.get("before", "")
        before = int(before_text) if before_text.isascii() and before_text.isdigit() else None
        return status, search, before

    async def rows_context(request: Request) -> dict[str, Any]:
        status, search, before = listing_filters(request)
        service: WorkflowService = request.app.state.service
        found = await in_thread(
            service.console_workflows, status=status, search=search, before=before, limit=PAGE_SIZE
        )
        older = (
            urlencode({"status": status, "q": search, "before": found[-1].position})
            if len(found) == PAGE_SIZE
            else ""
        )
        return {
            "workflows": found,
            "status": status,
            "search": search,
            "first_page": before is None,
            "older": older,
            "filters": urlencode({"status": status, "q": search}),
            "statuses": STATUSES,
            "when": _when,
        }

    async def log_head(request: Request) -> int:
        """The log's head, read before a live page's data: the page's script follows the log
        from there, so an event committed while the page was on its way is not missed."""
        event_log: log.EventLog = request.app.state.log
        return await in_thread(event_log.head)

    async def workflows_page(request: Request, session: Session) -> Response:
        after = await log_head(request)
        context = await rows_context(request)
        return render(request, "workflows.html", {"session": session, "after": after, **context})

    async def workflows_rows(request: Request, session: Session) -> Response:
        return render(request, "workflow_rows.html", await rows_context(request))

    async def workflow_context(request: Request) -> dict[str, Any] | None:
        try:
            workflow_id = str(uuid.UUID(str(request.path_params["workflow_id"])))
        except ValueError:
            return None
        service: WorkflowService = request.app.state.service
        events = await in_thread(service.history, workflow_id)
        if not events:
            return None
        # Secret fields are masked before anything is drawn or listed: the page never gets them.
        shown = [_masked(event, settings.secret_fields) for event in events]
        found = timeline.build(shown)
        assert found is not None
        started = shown[0].data
        return {
            "workflow_id": workflow_id,
            "timeline": found,
            "drawing": timeline.layout(found),
            "client": started.get("client", ""),
            "username": started.get("input", {}).get("username", ""),
            "started": _when(found.started_at),
            "compact": history.listing(shown, settings.secret_fields, view="compact"),
            "events": history.listing(shown, settings.secret_fields),
        }

    async def workflow_page(request: Request, session: Session) -> Response:
        after = await log_head(request)
        context = await workflow_context(request)
        if context is None:
            return render(request, "missing.html", {"session": session}, status=404)
        return render(request, "workflow.html", {"session": session, "after": after, **context})

    async def workflow_panel(request: Request, session: Session) -> Response:
        context = await workflow_context(request)
        if context is None:
            return secured(PlainTextResponse("no workflow with this id", 404))
        return render(request, "workflow_panel.html", context)

    # --- the log and health ------------------------------------------------------------------

    async def log_page(request: Request, session: Session) -> Response:
        chosen = request.query_params.get("type", "")
        done = request.query_params.get("done", "")[:200]
        groups = await in_thread(request.app.state.subscriptions.all)
        context = {"types": EVENT_TYPES, "chosen": chosen, "groups": groups, "done": done}
        return render(request, "log.html", {"session": session, **context})

    async def group_action(request: Request, session: Session) -> Response:
        """Replay a group's parked events, or rewind it: a change, so a form of this console's
        (its CSRF token), logged with who did it."""
        form = await forged(request, session)
        if form is None:
            return refused()
        name, action = str(request.path_params["name"]), str(request.path_params["action"])
        if action not in ("replay", "rewind"):
            return secured(PlainTextResponse("a group is replayed or rewound", 404))
        subscriptions: Subscriptions = request.app.state.subscriptions
        try:
            if action == "replay":
                done = await in_thread(subscriptions.replay, name, None)
                said = f"{done} parked event(s) of {name} delivered again"
            else:
                to_text = form.get("to", "start")
                to: str | int = int(to_text) if to_text.isdigit() else to_text
                done = await in_thread(subscriptions.rewind, name, to)
                said = f"{name} now reads the log after position {done}"
        except (UnknownGroup, BadRequest, PositionPastHead) as error:
            return render(request, "refused.html", {"session": session, "why": str(error)}, 400)
        logger.info(
            "metallica.console_action",
            extra={"reader": session.reader, "action": action, "group": name, "result": done},
        )
        return secured(RedirectResponse(f"{PREFIX}/log?{urlencode({'done': said})}", 303))

    async def health_page(request: Request, session: Session) -> Response:
        report = await health.report(request.app.state)
        return render(request, "health.html", {"session": session, "health": report})

    async def health_panel(request: Request, session: Session) -> Response:
        report = await health.report(request.app.state)
        return render(request, "health_panel.html", {"health": report})

    async def live(request: Request, session: Session) -> Response:
        """The log, filtered by type and workflow: what the pages follow. From ``after`` (the
        head the page was read at), or the ``Last-Event-ID`` a reconnecting page sends, else
        from the head: a page that followed from the head it met on connecting missed what
        committed between its reading and its stream (CI saw a workflow's page stay "running"
        after the workflow had completed)."""
        types = tuple(t for t in request.query_params.getlist("type") if t in EVENT_TYPES)
        workflow_id = request.query_params.get("workflow_id", "")
        if workflow_id:
            try:
                workflow_id = str(uuid.UUID(workflow_id))
            except ValueError:
                return secured(PlainTextResponse("workflow_id must be a UUID", 400))
        head = await log_head(request)
        try:
            asked = request.query_params.get("after")
            requested = head if asked is None else log.position(asked, field="after")
            after = log.resume_after(requested, request.headers.get("last-event-id"), head)
        except (BadRequest, PositionPastHead) as error:
            return secured(PlainTextResponse(error.detail, 400))
        event_log: log.EventLog = request.app.state.log
        query = log.LogQuery(after=after, types=types, workflow_id=workflow_id)
        events = stream.follow(
            request.app.state.tailer,
            event_log,
            query,
            log.Reader(session.reader, whole_log=True),
            capacity=settings.stream_buffer,
            heartbeat=settings.stream_heartbeat,
            max_duration=settings.stream_max_duration,
            metrics=request.app.state.metrics,
            pace=STREAM_PACE,
        )
        response = EventSourceResponse(
            events,
            ping=settings.stream_heartbeat,
            send_timeout=settings.stream_send_timeout,
            headers={"X-Accel-Buffering": "no"},
        )
        return secured(response)

    async def home(request: Request) -> Response:
        return secured(RedirectResponse(f"{PREFIX}/workflows", 303))

    return [
        Route(PREFIX, home, methods=["GET"]),
        Route(f"{PREFIX}/", home, methods=["GET"]),
        Route(f"{PREFIX}/login", login_page, methods=["GET"]),
        Route(f"{PREFIX}/login", login, methods=["POST"]),
        Route(f"{PREFIX}/logout", fragment(logout), methods=["POST"]),
        Route(f"{PREFIX}/workflows", page(workflows_page), methods=["GET"]),
        Route(f"{PREFIX}/workflows/rows", fragment(workflows_rows), methods=["GET"]),
        Route(f"{PREFIX}/workflows/{{workflow_id}}", page(workflow_page), methods=["GET"]),
        Route(
            f"{PREFIX}/workflows/{{workflow_id}}/panel", fragment(workflow_panel), methods=["GET"]
        ),
        Route(f"{PREFIX}/log", page(log_page), methods=["GET"]),
        Route(
            f"{PREFIX}/groups/{{name}}/{{action:str}}",
            fragment(group_action),
            methods=["POST"],
        ),
        Route(f"{PREFIX}/health", page(health_page), methods=["GET"]),
        Route(f"{PREFIX}/health/panel", fragment(health_panel), methods=["GET"]),
        Route(f"{PREFIX}/stream", fragment(live), methods=["GET"]),
        Mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static"),
    ]


def _masked(event: engine.RecordedEvent, secret_fields: frozenset[str]) -> engine.RecordedEvent:
    masked: Mapping[str, Any] = history.redact(event.data, secret_fields)
    return engine.RecordedEvent(
        event.global_position,
        event.stream_id,
        event.version,
        event.type,
        dict(masked),
        event.recorded_at,
    )


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
