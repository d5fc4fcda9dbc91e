"""A workflow and its history as its owner sees them: its representation, the listing of its
events (secret fields masked, failed attempts summed up on request), the pages of a client's
workflows, and the checks of who may see what. Plain functions of plain values: the HTTP layer
reads the request and hands its query parameters over."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metallica.errors import BadRequest, Forbidden
from metallica.protools import engine, store
from metallica.protools.sealing import is_sealed

REDACTED = "***"
# A compact listing's entry for a run of failed attempts (never stored: see compact()).
ATTEMPTS_FAILED = "StepAttemptsFailed"

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
    """``value`` with every field in ``secret_fields`` masked, at any depth, whether it holds
    a string or a sealed one (as stored), for event listings (the password workflow's: the
    password and the mail's body)."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if key in secret_fields and (isinstance(item, str) or is_sealed(item))
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
                "started_at": iso_time(summary.started_at),
            }
            for summary in found
        ],
        "next": str(found[-1].position) if len(found) == limit else None,
    }


def events_view(query: Mapping[str, str]) -> str:
    """The ``view`` of a listing of a workflow's events, from its query parameters (only
    :data:`EVENTS_PARAMETERS`): ``all`` (the default), every event as stored; ``compact``, runs
    of failed attempts summed up (:func:`compact`); a 400 ``bad-request`` naming the
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
    entries = compact(events) if view == "compact" else events
    listed = []
    for entry in entries:
        if isinstance(entry, FailureRun):
            first, data = (
                entry.first,
                entry.summary() | {"last_time": iso_time(entry.last.recorded_at)},
            )
            kind = ATTEMPTS_FAILED
        else:
            first, data, kind = entry, dict(entry.data), entry.type
        listed.append(
            {
                "version": first.version,
                "type": kind,
                "time": iso_time(first.recorded_at),
                "data": redact(data, secret_fields),
            }
        )
    return listed


def iso_time(timestamp: float) -> str:
    """A time as the API writes it: ISO 8601, UTC, to the millisecond."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(
        timespec="milliseconds"
    )


# --- the readable history: runs of failures as one entry ---------------------------------------


@dataclass(frozen=True)
class FailureRun:
    """Consecutive failed attempts of one step, all in doubt or all not, with the parks between
    them: one entry of a compact listing (:func:`compact`), never stored."""

    events: tuple[engine.RecordedEvent, ...]

    @property
    def first(self) -> engine.RecordedEvent:
        return self.events[0]

    @property
    def last(self) -> engine.RecordedEvent:
        return self.events[-1]

    def summary(self) -> dict[str, Any]:
        """What the run says: its step and doubt, how many attempts failed (``count``), the
        first and last of them, and each cause (``reason``) in the order it first came, with
        its count and its first and last attempt and detail; the parks by reason; the
        replicas called; when the last failure said to retry, and where."""
        failures = [event.data for event in self.events if event.type == engine.ATTEMPT_FAILED]
        causes: dict[str, dict[str, Any]] = {}
        for data in failures:
            cause = causes.setdefault(
                str(data["reason"]),
                {
                    "reason": data["reason"],
                    "count": 0,
                    "first_attempt": data["attempt"],
                    "first_detail": data.get("detail", ""),
                },
            )
            cause |= {
                "count": cause["count"] + 1,
                "last_attempt": data["attempt"],
                "last_detail": data.get("detail", ""),
            }
        parked: dict[str, dict[str, Any]] = {}
        for event in self.events:
            if event.type == engine.PARKED:
                reason = event.data["reason"]
                park = parked.setdefault(str(reason), {"reason": reason, "count": 0})
                park |= {"count": park["count"] + 1, "last_detail": event.data.get("detail", "")}
        replicas = list(dict.fromkeys(data["replica"] for data in failures if "replica" in data))
        return {
            "step": self.first.data["step"],
            "in_doubt": failures[0]["in_doubt"],
            "count": len(failures),
            "first_attempt": failures[0]["attempt"],
            "last_attempt": failures[-1]["attempt"],
            "last_version": self.last.version,
            "causes": list(causes.values()),
            "parked": list(parked.values()),
            "replicas": replicas,
            "retry_in": failures[-1].get("retry_in"),
            "next_replica": failures[-1].get("next_replica"),
        }


def compact(events: Sequence[engine.RecordedEvent]) -> list[engine.RecordedEvent | FailureRun]:
    """A stream as a person reads it: each run of two or more failed attempts of one step
    becomes a :class:`FailureRun`; every other event stays as it is.

    A run is the longest stretch of consecutive ``StepAttemptFailed`` and ``StepParked`` events
    of one step whose failures agree on ``in_doubt``: the failure that put the step in doubt
    starts a new entry, so when the doubt began stays plain. A failure that reports attempts
    nobody recorded (``unrecorded``), or one recorded by a replica that had lost its lease, is
    not routine and stays an event of its own. The length of the listing depends on how often
    the step's doubt changed (once at most) and on such rare events, not on how many attempts
    failed: a service down for a day is one entry per step.
    """
    entries: list[engine.RecordedEvent | FailureRun] = []
    run: list[engine.RecordedEvent] = []
    doubt: bool | None = None  # the run's failures', once it has one

    def close() -> None:
        if sum(event.type == engine.ATTEMPT_FAILED for event in run) >= 2:
            entries.append(FailureRun(tuple(run)))
        else:
            entries.extend(run)
        run.clear()

    for event in events:
        routine = _routine(event)
        failure_doubt = (
            bool(event.data["in_doubt"]) if event.type == engine.ATTEMPT_FAILED else None
        )
        if run and not (
            routine
            and event.data["step"] == run[0].data["step"]
            and (failure_doubt is None or doubt is None or failure_doubt == doubt)
        ):
            close()
            doubt = None
        if not routine:
            entries.append(event)
            continue
        run.append(event)
        if doubt is None:
            doubt = failure_doubt
    close()
    return entries


def _routine(event: engine.RecordedEvent) -> bool:
    """Whether ``event`` may join a run: a park, or a failure with nothing unusual to tell."""
    if event.type == engine.PARKED:
        return True
    return (
        event.type == engine.ATTEMPT_FAILED
        and not event.data.get("unrecorded")
        and not event.data.get("lease_lost")
    )
