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
    event = {
        "type": "object",
        "required": ["version", "type", "time", "data"],
        "properties": {
            "version": {"type": "integer", "minimum": 1},
            "type": {"type": "string", "examples": ["WorkflowStarted", "StepSucceeded"]},
            "time": {"type": "string", "format": "date-time"},
            "data": {"type": "object", "description": "passwords and mail bodies masked"},
        },
        "additionalProperties": False,
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
    }
    return service_document(
        "protools",
        "Metallica protools",
        "The orchestrator: takes password-creation commands, records each workflow as events, "
        "drives it through the password-generator and the mail-sender, serves the result and "
        "the events.",
        paths,
        {"PasswordCreation": command, "Workflow": workflow},
    )
