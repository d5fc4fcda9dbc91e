"""The services' OpenAPI 3.1 documents, written by hand as data; each serves its own at
``GET /openapi.json``.

One module builds the three from shared pieces (the problem+json schema, the bearer scheme, the
headers every command takes, the health and metrics endpoints), so a change to what every
service answers is made once. The documents describe every route a service has but the fault
endpoints (``/v1/faults``: for tests and the fault lab, off unless ``METALLICA_FAULTS`` is set).
``tests/fuzz`` runs schemathesis against each running service to keep the documents and the
code in agreement.
"""

from __future__ import annotations

import copy
from typing import Any

from metallica import __version__, usernames
from metallica.deadlines import DEADLINE_HEADER
from metallica.faults import ATTEMPT_HEADER
from metallica.mail_sender.domain import MAX_BODY, MAX_SUBJECT
from metallica.problems import MEDIA_TYPE, PROBLEM_TYPE_BASE
from metallica.web.requests import MAX_BODY_BYTES, MAX_JSON_DEPTH

Document = dict[str, Any]

SERVICES = ("protools", "generator", "mailer")
JSON = "application/json"
# What prometheus-client's text exposition answers (its version changes with the library's).
METRICS_MEDIA_TYPE = "text/plain"

# --- shared pieces -------------------------------------------------------------------------------

# A username as usernames.validate() takes it. The lookahead is for generators that read ``$``
# as Python does (before a final newline): ECMA-262 and usernames.validate() never do.
USERNAME_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": usernames.MAX_LENGTH,
    "pattern": usernames.USERNAME.pattern + "(?![\\s\\S])",
    "description": usernames.RULE + ".",
    "examples": ["alice", "bob.smith-2"],
}
# A mail address as addresses.validate() takes it.
ADDRESS_SCHEMA = {
    "type": "string",
    "maxLength": 254,
    "pattern": (
        '^[^@\\s<>(),;:"\\[\\]\\\\\\x00-\\x1f\\x7f-\\x9f]+'
        "@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$(?![\\s\\S])"
    ),
    "description": "one '@'; no space, bracket, quote, line break or control character",
    "examples": ["alice@example.com"],
}

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "An RFC 9457 problem: every error any service answers is one of these.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {
            "type": "string",
            "description": f"{PROBLEM_TYPE_BASE}<code>; the code is stable, for programs",
            "pattern": "^" + PROBLEM_TYPE_BASE.replace(".", "\\.") + "[a-z0-9-]+$",
        },
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "for people; never a secret or a trace"},
        "instance": {"type": "string", "description": "the path the problem is about"},
        "field": {"type": "string", "description": "the request field at fault"},
        "retry_after": {"type": "integer", "minimum": 0},
        "workflow_id": {"type": "string", "format": "uuid"},
        "retention_seconds": {"type": "integer", "minimum": 0},
    },
    "additionalProperties": True,
}

RETRY_AFTER = {
    "description": "seconds to wait before trying again",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "METALLICA_API_TOKEN: the token clients present to protools, and "
        "protools to the services",
    }
}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "The command's stable key: a repeat with the same key and body gets the "
    "same answer; the same key with another body gets 422 idempotency-key-reused. 1 to 255 "
    "printable ASCII characters, no space at either end.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[!-~](?:[ -~]*[!-~])?$",
    },
}
DEADLINE = {
    "name": DEADLINE_HEADER,
    "in": "header",
    "required": False,
    "description": "Milliseconds the caller (protools) will still wait, from when it sent the "
    "request. Work not started once it has passed is dropped: 503 deadline-passed. Anything "
    "but a non-negative number is ignored.",
    "schema": {"type": "string"},
}
ATTEMPT = {
    "name": ATTEMPT_HEADER,
    "in": "header",
    "required": False,
    "description": "Which attempt of a step this call is (protools sends it; fault points "
    "may target first attempts). Anything but a number is ignored.",
    "schema": {"type": "string"},
}


def problem(description: str, *, retry_after: bool | None = None) -> dict[str, Any]:
    """A response of problem+json; ``retry_after``: with the header, required (True) or not
    always (False)."""
    response: dict[str, Any] = {
        "description": description,
        "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if retry_after is not None:
        response["headers"] = {
            "Retry-After": {**RETRY_AFTER, "required": retry_after},
        }
    return response


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


UNAUTHORIZED = problem("unauthorized: no valid 'Authorization: Bearer <token>'")
UNAVAILABLE = problem(
    "overloaded (more requests in flight than the service takes), or its database is busy or "
    "unreachable; nothing was done that a retry could duplicate",
    retry_after=True,
)
INVALID_ID = problem("invalid-id: the id is not a UUID")


def command_errors() -> dict[str, Any]:
    """What any command (a POST with a JSON body and an Idempotency-Key) may be refused with."""
    return {
        "400": problem(
            "idempotency-key-missing: no Idempotency-Key header, or idempotency-key-invalid: "
            "one that is not 1 to 255 printable ASCII characters"
        ),
        "401": UNAUTHORIZED,
        "413": problem(f"payload-too-large: the body is over {MAX_BODY_BYTES} bytes"),
        "415": problem("unsupported-media-type: the body must be sent as application/json"),
        "422": problem(
            "invalid-body (not a JSON object, nested deeper than "
            f"{MAX_JSON_DEPTH}, an unknown field, a field missing or of the wrong type), "
            "invalid-username, or idempotency-key-reused (this key came with another body)"
        ),
        "503": UNAVAILABLE,
    }


def command_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "description": f"A JSON object (Content-Type: application/json), at most "
        f"{MAX_BODY_BYTES} bytes, nested at most {MAX_JSON_DEPTH} deep, no field but these.",
        "content": {JSON: {"schema": schema}},
    }


def shared_paths() -> dict[str, Any]:
    """Health, readiness, metrics and this document: every service has them, without token."""
    check = {
        "type": "object",
        "required": ["ok"],
        "properties": {"ok": {"type": "boolean"}, "error": {"type": "string"}},
    }
    readiness = {
        "type": "object",
        "required": ["status", "service", "checks"],
        "properties": {
            "status": {"enum": ["ready", "not-ready"]},
            "service": {"type": "string"},
            "checks": {"type": "object", "additionalProperties": check},
        },
    }
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["operations"],
                "summary": "Liveness: the process answers",
                "security": [],
                "responses": {
                    "200": json_body(
                        {
                            "type": "object",
                            "required": ["status", "service", "pid"],
                            "properties": {
                                "status": {"const": "ok"},
                                "service": {"type": "string"},
                                "pid": {
                                    "type": "integer",
                                    "description": "the answering process (for supervisors)",
                                },
                            },
                        },
                        "alive",
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["operations"],
                "summary": "Readiness: the database answers with this code's schema (protools: "
                "and the relay's loops run)",
                "security": [],
                "responses": {
                    "200": json_body(readiness, "ready"),
                    "503": json_body(readiness, "not ready: the failing checks say why"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics, text exposition format (no secret in them)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the metrics",
                        "content": {METRICS_MEDIA_TYPE: {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["operations"],
                "summary": "This document",
                "security": [],
                "responses": {"200": json_body({"type": "object"}, "the OpenAPI document")},
            }
        },
    }


def document(
    service: str, title: str, description: str, paths: dict[str, Any], schemas: dict[str, Any]
) -> Document:
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__, "description": description},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [
            {"name": "commands"},
            {"name": "operations", "description": "health, readiness, metrics: no token"},
        ],
        "security": [{"bearer": []}],
        "paths": {**paths, **shared_paths()},
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "schemas": {"Problem": PROBLEM_SCHEMA, **schemas},
        },
        "x-metallica-service": service,
    }


# --- protools ------------------------------------------------------------------------------------

WORKFLOW_ID = {"type": "string", "format": "uuid"}
PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "'wait=<seconds>' (RFC 7240): how long to wait for the workflow to end "
    "before answering (commands: METALLICA_WAIT_DEFAULT, 5 s; reads: 0), capped at "
    "METALLICA_WAIT_MAX (30 s); a command's time waiting for admission counts in it (one "
    "that will not wait, wait=0, is refused at once when no place is free). Other "
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
    "schema": {"enum": ["all", "compact"], "default": "all"},
}


def protools() -> Document:
    workflow = {
        "type": "object",
        "required": ["workflow_id", "status"],
        "properties": {
            "workflow_id": WORKFLOW_ID,
            "status": {"enum": ["running", "completed", "failed"]},
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
        "properties": {"status": {"const": "completed"}},
    }
    running = {
        "allOf": [{"$ref": "#/components/schemas/Workflow"}],
        "properties": {"status": {"const": "running"}},
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
                        "schema": {"type": "string", "enum": ["running", "completed", "failed"]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "workflows on a page (default 20)",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "description": "the 'next' cursor of the page before",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
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
                                                "enum": ["running", "completed", "failed"],
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
    return document(
        "protools",
        "Metallica protools",
        "The orchestrator: takes password-creation commands, records each workflow as events, "
        "drives it through the password-generator and the mail-sender, serves the result and "
        "the events.",
        paths,
        {"PasswordCreation": command, "Workflow": workflow},
    )


# --- password-generator --------------------------------------------------------------------------


def generator() -> Document:
    request = {
        "type": "object",
        "required": ["username"],
        "properties": {"username": USERNAME_SCHEMA},
        "additionalProperties": False,
    }
    created = {
        "type": "object",
        "required": ["username", "password"],
        "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
        "additionalProperties": False,
    }
    errors = command_errors()
    errors["409"] = problem(
        "username-taken (this username already has a password, made under another key), or "
        "command-in-progress (another request with this key is being served; Retry-After)",
        retry_after=False,
    )
    paths = {
        "/v1/passwords": {
            "post": {
                "operationId": "createPassword",
                "tags": ["commands"],
                "summary": "Generate the one password of a username",
                "description": "One password per username (case-insensitive), ever. A repeat "
                "of the key gets the same answer while its record is kept "
                "(METALLICA_IDEMPOTENCY_RETENTION), then 410.",
                "parameters": [IDEMPOTENCY_KEY, DEADLINE, ATTEMPT],
                "requestBody": command_body({"$ref": "#/components/schemas/PasswordRequest"}),
                "responses": {
                    "201": json_body(
                        {"$ref": "#/components/schemas/Password"},
                        "created (or a repeat of the key: the same answer)",
                    ),
                    **errors,
                    "410": problem(
                        "idempotency-record-expired: a repeat of a key whose answer is no "
                        "longer kept"
                    ),
                    "500": problem(
                        "replay-unreadable: the key that sealed this answer was dropped from "
                        "the key ring (a configuration error)"
                    ),
                    "503": problem(
                        "overloaded, deadline-passed (the caller's X-Deadline-Ms passed "
                        "before the work started: nothing was done), or the database is busy "
                        "or unreachable",
                        retry_after=True,
                    ),
                },
            }
        }
    }
    return document(
        "generator",
        "Metallica password-generator",
        "Generates the one password of a username; keeps a keyed digest of it, and a sealed "
        "copy to answer repeats of the command's key.",
        paths,
        {"PasswordRequest": request, "Password": created},
    )


# --- mail-sender ---------------------------------------------------------------------------------


def mailer() -> Document:
    header_text = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$(?![\\s\\S])"
    request = {
        "type": "object",
        "required": ["to", "subject", "body"],
        "properties": {
            "to": ADDRESS_SCHEMA,
            "subject": {
                "type": "string",
                "maxLength": MAX_SUBJECT,
                "pattern": header_text,
                "description": "no line break (CR, LF, VT, FF, NEL, U+2028...) or other "
                "control character but TAB",
            },
            "body": {"type": "string", "maxLength": MAX_BODY, "description": "the text"},
        },
        "additionalProperties": False,
    }
    sent = {
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
        "additionalProperties": False,
    }
    errors = command_errors()
    paths = {
        "/v1/mails": {
            "post": {
                "operationId": "sendMail",
                "tags": ["commands"],
                "summary": "Write a mail to the Maildir, once per key",
                "parameters": [IDEMPOTENCY_KEY, DEADLINE, ATTEMPT],
                "requestBody": command_body({"$ref": "#/components/schemas/Mail"}),
                "responses": {
                    "202": json_body(
                        {"$ref": "#/components/schemas/MailSent"},
                        "written to <maildir>/new/ (a repeat of the key writes nothing)",
                    ),
                    **errors,
                    "503": problem(
                        "overloaded, deadline-passed (the caller's X-Deadline-Ms passed "
                        "before the work started: nothing was written), or the database is "
                        "busy or unreachable",
                        retry_after=True,
                    ),
                },
            }
        }
    }
    return document(
        "mailer",
        "Metallica mail-sender",
        "Sends a mail by writing it, RFC 5322, to a Maildir; once per Idempotency-Key.",
        paths,
        {"Mail": request, "MailSent": sent},
    )


BUILDERS = {"protools": protools, "generator": generator, "mailer": mailer}


def openapi_document(service: str) -> Document:
    """The OpenAPI document of ``service`` (``protools``, ``generator`` or ``mailer``), a fresh
    copy the caller may change."""
    return copy.deepcopy(BUILDERS[service]())
