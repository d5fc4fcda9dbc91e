"""The password-generator's OpenAPI 3.1 document, written by hand as data; served at
``GET /openapi.json``.

Every limit it states comes from the module that enforces it (usernames and the command's
headers and body through :mod:`metallica.web.openapi`).
"""

from __future__ import annotations

from metallica.web.openapi import (
    ATTEMPT,
    DEADLINE,
    IDEMPOTENCY_KEY,
    USERNAME_SCHEMA,
    Document,
    command_body,
    command_errors,
    json_body,
    problem,
    service_document,
)


def openapi_document() -> Document:
    """The password-generator's document, a fresh copy the caller may change."""
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
    return service_document(
        "generator",
        "Metallica password-generator",
        "Generates the one password of a username; keeps a keyed digest of it, and a sealed "
        "copy to answer repeats of the command's key.",
        paths,
        {"PasswordRequest": request, "Password": created},
    )
