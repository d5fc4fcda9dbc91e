"""A workflow and its history as its owner sees them: its representation, the listing of its
events (secret fields masked, failed attempts summed up on request), the pages of a client's
workflows, and the checks of who may see what. Plain functions of plain values: the HTTP layer
reads the request and hands its query parameters over."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from metallica.errors import BadRequest, Forbidden
from metallica.protools import engine, store

REDACTED = "***"

LIST_STATUSES = (engine.RUNNING, engine.COMPLETED_STATUS, engine.FAILED_STATUS)
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 20, 100
CURSOR_DIGITS = 18  # a log position; 18 digits stay under PostgreSQL's bigint
# The query parameters of each read: any other is a 400 (a misspelt one is not ignored).
LISTING_PARAMETERS = ("status", "limit", "after")
EVENTS_PARAMETERS = ("view",)
EVENT_VIEWS = ("all", "compact")
EVENT_VIEW_DEFAULT = "all"
# Seconds a read of a workflow waits for it to end without a 'Prefer: wait=' (commands: the
# setting METALLICA_WAIT_DEFAULT).
READ_WAIT_DEFAULT = 0


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


def listing_query(query: Mapping[str, str]) -> tuple[str, int | None, int]:
    """``(status, before, limit)`` of a listing of workflows, from its query parameters (only
    :data:`LISTING_PARAMETERS`): ``status`` one of :data:`LIST_STATUSES` or "" for any,
    ``after`` the ``next`` cursor of the page before, and ``limit`` 1 to 100; a 400
    ``bad-request`` naming the parameter otherwise."""
    status = query.get("status")
    if status is not None and status not in LIST_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(LIST_STATUSES)}", field="status")
    limit_text = query.get("limit", str(LIST_LIMIT_DEFAULT))
    if not (limit_text.isascii() and limit_text.isdigit()) or not (
        1 <= int(limit_text) <= LIST_LIMIT_MAX
    ):
        raise BadRequest(f"limit must be a whole number from 1 to {LIST_LIMIT_MAX}", field="limit")
    after = query.get("after")
    before = None
    if after is not None:
        if not (after.isascii() and after.isdigit() and len(after) <= CURSOR_DIGITS):
            raise BadRequest("after must be the 'next' cursor of the page before", field="after")
        before = int(after)
    return status or "", before, int(limit_text)


def workflows_page(found: Sequence[store.WorkflowSummary], limit: int) -> dict[str, Any]:
    """A page of a client's workflows, as listed: ``next`` is the cursor of the page after it
    (None on the last page: one shorter than ``limit``)."""
    return {
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


def events_view(query: Mapping[str, str]) -> str:
    """The ``view`` of a listing of a workflow's events, from its query parameters (only
    :data:`EVENTS_PARAMETERS`): ``all`` (the default), every event as stored; ``compact``, runs
    of failed attempts summed up (:func:`engine.compact`); a 400 ``bad-request`` naming the
    parameter otherwise."""
    view = query.get("view", EVENT_VIEW_DEFAULT)
    if view not in EVENT_VIEWS:
        raise BadRequest(f"view must be one of {', '.join(EVENT_VIEWS)}", field="view")
    return view


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
