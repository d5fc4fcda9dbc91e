"""What protools' reads take besides the workflow's id: the listing's filter, page size and
cursor, the events' view, and how long a read waits unless the client says otherwise.

Apart from :mod:`metallica.protools.http` so that the OpenAPI document
(:mod:`metallica.protools.openapi`, which the HTTP module serves) states these limits from here.
"""

from __future__ import annotations

from starlette.requests import Request

from metallica.errors import BadRequest
from metallica.protools import engine
from metallica.web.requests import known_query

LIST_STATUSES = (engine.RUNNING, engine.COMPLETED_STATUS, engine.FAILED_STATUS)
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 20, 100
CURSOR_DIGITS = 18  # a log position; 18 digits stay under PostgreSQL's bigint

EVENT_VIEWS = ("all", "compact")
EVENT_VIEW_DEFAULT = "all"

# Seconds a read of a workflow waits for it to end without a 'Prefer: wait=' (commands: the
# setting METALLICA_WAIT_DEFAULT).
READ_WAIT_DEFAULT = 0


def listing_query(request: Request) -> tuple[str, int | None, int]:
    """``(status, before, limit)`` of a ``GET /v1/workflows``: ``status`` one of
    :data:`LIST_STATUSES` or "" for any, ``after`` the ``next`` cursor of the page before, and
    ``limit`` 1 to :data:`LIST_LIMIT_MAX`; a 400 ``bad-request`` naming the parameter
    otherwise."""
    known_query(request, "status", "limit", "after")
    query = request.query_params
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


def events_view(request: Request) -> str:
    """The ``view`` of a ``GET /v1/workflows/{id}/events``: ``all`` (the default), every event
    as stored; ``compact``, runs of failed attempts summed up (:func:`engine.compact`); a 400
    ``bad-request`` naming the parameter otherwise."""
    known_query(request, "view")
    view = request.query_params.get("view", EVENT_VIEW_DEFAULT)
    if view not in EVENT_VIEWS:
        raise BadRequest(f"view must be one of {', '.join(EVENT_VIEWS)}", field="view")
    return view
