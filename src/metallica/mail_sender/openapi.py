"""The mail-sender's OpenAPI 3.1 document, written by hand as data; served at
``GET /openapi.json``.

Every limit it states comes from the module that enforces it (the mail's fields from
:mod:`metallica.mail_sender.domain`, addresses and the command's headers and body through
:mod:`metallica.web.openapi`).
"""

from __future__ import annotations

from metallica.mail_sender.domain import MAX_BODY, MAX_SUBJECT, NOT_IN_HEADERS
from metallica.web.openapi import (
    ADDRESS_SCHEMA,
    ATTEMPT,
    DEADLINE,
    IDEMPOTENCY_KEY,
    Document,
    command_body,
    command_errors,
    json_body,
    problem,
    service_document,
    whole,
)


def openapi_document() -> Document:
    """The mail-sender's document, a fresh copy the caller may change."""
    header_text = whole(f"^[^{NOT_IN_HEADERS}]*$")
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
    return service_document(
        "mailer",
        "Metallica mail-sender",
        "Sends a mail by writing it, RFC 5322, to a Maildir; once per Idempotency-Key.",
        paths,
        {"Mail": request, "MailSent": sent},
    )
