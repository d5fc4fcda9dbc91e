"""protools' OpenAPI 3.1 document, written by hand as data; served at ``GET /openapi.json``.

Every limit it states comes from the module that enforces it (the listing's and the events'
query from :mod:`metallica.protools.history`, usernames, addresses and the command's headers
through :mod:`metallica.web.openapi`); the defaults of settings are stated as text.
"""

from __future__ import annotations

from metallica.protools.engine import COMPLETED_STATUS, FAILED_STATUS, RUNNING
from metallica.protools.history import (
    CURSOR_DIGITS,
    EVENT_VIEW_DEFAULT,
    EVENT_VIEWS,
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    LIST_STATUSES,
    READ_WAIT_DEFAULT,
)
from metallica.protools.log import LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX, TYPE_NAME, TYPES_MAX
from metallica.protools.stream import END_REASONS
from metallica.protools.subscription_openapi import subscription_paths
from metallica.web.openapi import (
    ADDRESS_SCHEMA,
    IDEMPOTENCY_KEY,
    INVALID_ID,
    UNAUTHORIZED,
    UNAVAILABLE,
    USERNAME_SCHEMA,
    Document,
    command_body,
    command_errors,
    json_body,
    problem,
    service_document,
)

WORKFLOW_ID = {"type": "string", "format": "uuid"}
STATUSES = [RUNNING, COMPLETED_STATUS, FAILED_STATUS]
PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "'wait=<seconds>' (RFC 7240): how long to wait for the workflow to end "
    f"before answering (commands: METALLICA_WAIT_DEFAULT, 5 s; reads: {READ_WAIT_DEFAULT}), "
    "capped at METALLICA_WAIT_MAX (30 s); a command's time waiting for admission counts in it "
    "(one that will not wait, wait=0, is refused at once when no place is free). Other "
    "preferences are ignored.",
    "schema": {"type": "string"},
    "examples": {"no wait": {"value": "wait=0"}, "wait": {"value": "wait=10"}},
}
WORKFLOW_ID_PARAMETER = {
    "name": "workflow_id",
    "in": "path",
    "required": True,
    "description": "the id protools gave the workflow (a UUID; anything else: 400 invalid-id)",
    "schema": WORKFLOW_ID,
}

EVENTS_VIEW = {
    "name": "view",
    "in": "query",
    "required": False,
    "description": "'all' (the default): every event as stored; 'compact': each run of two or "
    "more failed attempts of one step (with the parks between them, all in doubt or all not) "
    "is one 'StepAttemptsFailed' entry, with the version and time of its first event and, in "
    "data, its count, first and last attempt, last_version, last_time and its causes, each "
    "with its count and first and last detail. Anything else: 400 bad-request.",
    "schema": {"enum": list(EVENT_VIEWS), "default": EVENT_VIEW_DEFAULT},
}

POSITION = {"type": "string", "pattern": f"^[0-9]{{1,{CURSOR_DIGITS}}}$"}
LOG_FILTERS = [
    {
        "name": "after",
        "in": "query",
        "description": "a log position: only the events after it (default 0, the start); a "
        "position past the log's head is a 404",
        "schema": POSITION,
    },
    {
        "name": "type",
        "in": "query",
        "description": f"only events of these types, comma-separated (at most {TYPES_MAX})",
        "schema": {
            "type": "string",
            "pattern": f"^{TYPE_NAME.pattern}(,{TYPE_NAME.pattern}){{0,{TYPES_MAX - 1}}}$",
        },
        "examples": {"one": {"value": "WorkflowCompleted"}},
    },
    {
        "name": "workflow_id",
        "in": "query",
        "description": "only this workflow's events (a UUID; anything else: 400 invalid-id)",
        "schema": WORKFLOW_ID,
    },
]
PAST_HEAD = problem("position-past-head: no event has that position yet")
LOG_READS = (
    "A client sees the events of the workflows it started; one named in METALLICA_LOG_READERS "
    "sees the whole log. Passwords and mail bodies are masked."
)


def openapi_document() -> Document:
    """protools' document, a fresh copy the caller may change."""
    workflow = {
        "type": "object",
        "required": ["workflow_id", "status"],
        "properties": {
            "workflow_id": WORKFLOW_ID,
            "status": {"enum": STATUSES},
            "username": {"type": "string", "description": "once completed"},
            "password": {"type": "string", "description": "once completed"},
            "error": {
                "$ref": "#/components/schemas/Problem",
                "description": "once failed: why",
            },
        },
        "additionalProperties": False,
    }
    completed = {
        "allOf": [{"$ref": "#/components/schemas/Workflow"}],
        "required": ["username", "password"],
        "properties": {"status": {"const": COMPLETED_STATUS}},
    }
    running = {
        "allOf": [{"$ref": "#/components/schemas/Workflow"}],
        "properties": {"status": {"const": RUNNING}},
    }
    event_fields: dict[str, object] = {
        "version": {"type": "integer", "minimum": 1},
        "type": {"type": "string", "examples": ["WorkflowStarted", "StepSucceeded"]},
        "time": {"type": "string", "format": "date-time"},
        "data": {"type": "object", "description": "passwords and mail bodies masked"},
    }
    event = {
        "type": "object",
        "required": ["version", "type", "time", "data"],
        "properties": event_fields,
        "additionalProperties": False,
    }
    logged = {
        "type": "object",
        "required": ["position", "workflow_id", "version", "type", "time", "data"],
        "properties": {
            "position": {
                "type": "integer",
                "minimum": 1,
                "description": "the event's place in the log: in commit order, never reused",
            },
            "workflow_id": WORKFLOW_ID,
            **event_fields,
        },
        "additionalProperties": False,
    }
    # One message of the stream (each is checked against it): an event of the log, or the
    # last message, 'end'.
    sse_message = {
        "anyOf": [
            {
                "type": "object",
                "required": ["id", "data"],
                "properties": {
                    "id": POSITION,
                    "event": {"const": "message"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": logged,
                    },
                },
            },
            {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"const": "end"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "type": "object",
                            "required": ["reason", "detail", "resume_after"],
                            "properties": {
                                "reason": {"enum": list(END_REASONS)},
                                "detail": {"type": "string"},
                                "resume_after": {"type": "integer", "minimum": 0},
                            },
                            "additionalProperties": False,
                        },
                    },
                },
            },
        ]
    }
    command = {
        "type": "object",
        "required": ["username"],
        "properties": {
            "username": USERNAME_SCHEMA,
            "email": {
                "anyOf": [ADDRESS_SCHEMA, {"type": "null"}],
                "description": "where the mail goes; by default <username>@METALLICA_MAIL_DOMAIN",
            },
        },
        "additionalProperties": False,
    }
    failed_run = "the workflow failed: "
    create_errors = command_errors()
    create_errors["409"] = problem(
        "username-taken (the workflow failed: this username already has a password), or "
        "command-in-progress (a request with this key is being accepted; Retry-After)",
        retry_after=False,
    )
    create_errors["422"]["description"] += (
        ", or " + failed_run + "invalid-username (the generator refused the username)"
    )
    create_errors["502"] = problem(
        failed_run + "password-lost (the generator made the password, but its record of the "
        "answer expired before protools could read it back: an operator must reset it)"
    )
    forbidden = problem("forbidden: the workflow was started by another client")
    create_errors["403"] = problem(
        "forbidden: this key started a workflow of another client (a replay is only for the "
        "client that started it)"
    )
    reads = {
        "400": INVALID_ID,
        "401": UNAUTHORIZED,
        "403": forbidden,
        "404": problem("not-found: no workflow with this id"),
        "503": UNAVAILABLE,
    }
    links = {
        "GetWorkflow": {
            "operationId": "getWorkflow",
            "parameters": {"workflow_id": "$response.body#/workflow_id"},
        },
        "GetWorkflowEvents": {
            "operationId": "getWorkflowEvents",
            "parameters": {"workflow_id": "$response.body#/workflow_id"},
        },
    }
    paths = {
        "/v1/workflows/password-creation": {
            "post": {
                "operationId": "createPassword",
                "tags": ["commands"],
                "summary": "Create a password for a username, mail it, and return it",
                "description": "Accepted commands always end (completed or failed) without "
                "the client resending; the answer comes when the workflow ends within the "
                "Prefer wait, else 202 with the Location to read or wait on. A repeat of the "
                "command (same key, same body) gets the same workflow's answer.",
                "parameters": [IDEMPOTENCY_KEY, PREFER],
                "requestBody": command_body({"$ref": "#/components/schemas/PasswordCreation"}),
                "responses": {
                    "200": {
                        **json_body(completed, "completed: the password (also mailed)"),
                        "links": links,
                    },
                    "202": {
                        **json_body(running, "accepted and running: read or wait on Location"),
                        "links": links,
                        "headers": {
                            "Location": {
                                "required": True,
                                "description": "/v1/workflows/{workflow_id}",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    **create_errors,
                    "429": problem(
                        "rate-limited: this client sent more commands than its rate allows",
                        retry_after=True,
                    ),
                    "503": problem(
                        "overloaded (refused before anything was stored: no place came free "
                        "under the admission limit within the command's wait, the admission "
                        "queue stands or is full, or too much work is parked; Retry-After from "
                        "the rate at which the queue drains), or the database is busy or "
                        "unreachable",
                        retry_after=True,
                    ),
                    "504": problem(failed_run + "deadline-exceeded"),
                },
            }
        },
        "/v1/workflows": {
            "get": {
                "operationId": "listWorkflows",
                "tags": ["commands"],
                "summary": "The calling client's workflows, newest first, a page at a time",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "description": "only the workflows in this status",
                        "schema": {"type": "string", "enum": list(LIST_STATUSES)},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": f"workflows on a page (default {LIST_LIMIT_DEFAULT})",
                        "schema": {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "description": "the 'next' cursor of the page before",
                        "schema": {
                            "type": "string",
                            "pattern": f"^[0-9]{{1,{CURSOR_DIGITS}}}$",
                        },
                    },
                ],
                "responses": {
                    "200": json_body(
                        {
                            "type": "object",
                            "required": ["workflows", "next"],
                            "properties": {
                                "workflows": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": [
                                            "workflow_id",
                                            "status",
                                            "username",
                                            "started_at",
                                        ],
                                        "properties": {
                                            "workflow_id": WORKFLOW_ID,
                                            "status": {
                                                "type": "string",
                                                "enum": STATUSES,
                                            },
                                            "username": {"type": ["string", "null"]},
                                            "started_at": {"type": "string"},
                                        },
                                        "additionalProperties": False,
                                    },
                                },
                                "next": {
                                    "type": ["string", "null"],
                                    "description": "pass as ?after= for the next page; null: "
                                    "this was the last",
                                },
                            },
                            "additionalProperties": False,
                        },
                        "the workflows, passwords never included (read one for its result)",
                    ),
                    "400": problem(
                        "bad-request: status, limit or after out of range, or a query "
                        "parameter this endpoint does not take (or given twice)"
                    ),
                    "401": reads["401"],
                    "503": reads["503"],
                },
            }
        },
        "/v1/workflows/{workflow_id}": {
            "get": {
                "operationId": "getWorkflow",
                "tags": ["commands"],
                "summary": "A workflow's state: running, completed (the password), failed (why)",
                "parameters": [WORKFLOW_ID_PARAMETER, PREFER],
                "responses": {
                    "200": json_body({"$ref": "#/components/schemas/Workflow"}, "the workflow"),
                    **reads,
                },
            }
        },
        "/v1/workflows/{workflow_id}/events": {
            "get": {
                "operationId": "getWorkflowEvents",
                "tags": ["commands"],
                "summary": "A workflow's events, versions 1..n, passwords masked",
                "parameters": [WORKFLOW_ID_PARAMETER, EVENTS_VIEW],
                "responses": {
                    "200": json_body(
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {
                                "events": {"type": "array", "minItems": 1, "items": event}
                            },
                            "additionalProperties": False,
                        },
                        "the events, oldest first",
                    ),
                    **reads,
                    "400": problem(
                        "invalid-id: the id is not a UUID, or bad-request: a view other than "
                        "all or compact, or another query parameter"
                    ),
                },
            }
        },
        "/v1/events": {
            "get": {
                "operationId": "readLog",
                "tags": ["log"],
                "summary": "The log: every event in commit order, a page at a time",
                "description": LOG_READS,
                "parameters": [
                    *LOG_FILTERS,
                    {
                        "name": "limit",
                        "in": "query",
                        "description": f"events on a page (default {LOG_LIMIT_DEFAULT})",
                        "schema": {"type": "integer", "minimum": 1, "maximum": LOG_LIMIT_MAX},
                    },
                ],
                "responses": {
                    "200": json_body(
                        {
                            "type": "object",
                            "required": ["events", "head", "next"],
                            "properties": {
                                "events": {"type": "array", "items": logged},
                                "head": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "description": "the log's last position when it was read",
                                },
                                "next": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "description": "pass as ?after= for the next page: every "
                                    "event up to it was looked at; equal to head: caught up",
                                },
                            },
                            "additionalProperties": False,
                        },
                        "the events after the position, oldest first",
                    ),
                    "400": problem(
                        "bad-request: after not a position, limit out of range, a bad type, "
                        "or a query parameter this endpoint does not take; invalid-id: "
                        "workflow_id is not a UUID"
                    ),
                    "404": PAST_HEAD,
                    "401": UNAUTHORIZED,
                    "503": UNAVAILABLE,
                },
            }
        },
        "/v1/events/stream": {
            "get": {
                "operationId": "followLog",
                "tags": ["log"],
                "summary": "The log, live, as Server-Sent Events",
                "description": LOG_READS + " Each event is an SSE message whose id is its "
                "position and whose data is the event as GET /v1/events shows it; a comment "
                "every METALLICA_STREAM_HEARTBEAT seconds (15) when nothing else is sent. A "
                "stream that the replica ends (a slow reader, a replica shutting down, "
                "METALLICA_STREAM_MAX_DURATION passed) gets a last message of event 'end' "
                "whose data holds reason, detail and resume_after: reconnect with "
                "Last-Event-ID set to that position (a browser's EventSource does).",
                "parameters": [
                    *LOG_FILTERS,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "a client resuming: the last position it received "
                        "(overrides after)",
                        "schema": POSITION,
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the stream: the events after the position, then live",
                        "content": {"text/event-stream": {"schema": sse_message}},
                    },
                    "400": problem(
                        "bad-request: after or Last-Event-ID not a position, a bad type, or a "
                        "query parameter this endpoint does not take; invalid-id: workflow_id "
                        "is not a UUID"
                    ),
                    "404": PAST_HEAD,
                    "401": UNAUTHORIZED,
                    "503": UNAVAILABLE,
                },
            }
        },
    }
    paths |= subscription_paths(logged)
    return service_document(
        "protools",
        "Metallica protools",
        "The orchestrator: takes password-creation commands, records each workflow as events, "
        "drives it through the password-generator and the mail-sender, serves the result and "
        "the events.",
        paths,
        {"PasswordCreation": command, "Workflow": workflow},
    )
