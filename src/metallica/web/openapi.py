"""The pieces the services' OpenAPI 3.1 documents share; each service's own document is
written by hand, as data, beside it (``metallica/<service>/openapi.py``) and served at
``GET /openapi.json`` by the app it builds (:func:`metallica.web.app.service_app`).

Here: the problem+json schema and responses, the bearer scheme, the headers every command
takes, the limits of every command's body, the health and metrics endpoints, the username and
address schemas, and the document's skeleton, so a change to what every service answers is
made once. This module imports no service: each limit a document states comes from the module
that enforces it. The documents describe every route a service has but the fault endpoints
(``/v1/faults``: for tests and the fault lab, off unless ``METALLICA_FAULTS`` is set).
``tests/fuzz`` runs schemathesis against each running service to keep the documents and the
code in agreement.
"""

from __future__ import annotations

import copy
from typing import Any

from metallica import __version__, addresses, usernames
from metallica.deadlines import DEADLINE_HEADER
from metallica.faults import ATTEMPT_HEADER
from metallica.problems import MEDIA_TYPE, PROBLEM_TYPE_BASE
from metallica.web.requests import IDEMPOTENCY_KEY as IDEMPOTENCY_KEY_RULE
from metallica.web.requests import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
)

Document = dict[str, Any]

JSON = "application/json"
# What prometheus-client's text exposition answers (its version changes with the library's).
METRICS_MEDIA_TYPE = "text/plain"
# For generators that read ``$`` as Python does (before a final newline): ECMA-262 and the
# code's fullmatch() never do.
AT_THE_END = "(?![\\s\\S])"


def whole(pattern: str) -> str:
    """The JSON Schema ``pattern`` of a regular expression (anchored ``^...$``) that the code
    fullmatch()es: no final newline either."""
    return pattern + AT_THE_END


# --- shared pieces -------------------------------------------------------------------------------

# A username as usernames.validate() takes it.
USERNAME_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": usernames.MAX_LENGTH,
    "pattern": whole(usernames.USERNAME.pattern),
    "description": usernames.RULE + ".",
    "examples": ["alice", "bob.smith-2"],
}
# A mail address as addresses.validate() takes it.
ADDRESS_SCHEMA = {
    "type": "string",
    "maxLength": addresses.MAX_LENGTH,
    "pattern": whole(addresses.ADDRESS.pattern),
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
    "same answer; the same key with another body gets 422 idempotency-key-reused. 1 to "
    f"{IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters, no space at either end.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
        "pattern": IDEMPOTENCY_KEY_RULE.pattern,
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
            f"one that is not 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters"
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


def service_document(
    service: str, title: str, description: str, paths: dict[str, Any], schemas: dict[str, Any]
) -> Document:
    """The OpenAPI document of ``service``: its own ``paths`` and ``schemas``, with the shared
    endpoints, the Problem schema and the bearer scheme; a fresh copy the caller may change
    (nothing in it is shared with another document)."""
    return copy.deepcopy(
        {
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
    )
