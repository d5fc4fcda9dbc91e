"""The services' OpenAPI documents: one per service, every route in it, served without a token,
and every limit in them the one the code enforces.

That the services answer as their documents say is for schemathesis (tests/fuzz).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.core.result import Ok
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.routing import Route

from metallica import addresses, services, usernames
from metallica.errors import InvalidInput
from metallica.mail_sender import domain as mail_domain
from metallica.mail_sender.http import create_app as create_mailer
from metallica.mail_sender.openapi import openapi_document as mailer_document
from metallica.mail_sender.settings import MailerSettings
from metallica.password_generator.http import create_app as create_generator
from metallica.password_generator.openapi import openapi_document as generator_document
from metallica.password_generator.sealing import GeneratorKeyring
from metallica.password_generator.settings import GeneratorSettings
from metallica.protools import history
from metallica.protools.http import create_app as create_protools
from metallica.protools.openapi import openapi_document as protools_document
from metallica.protools.settings import ProtoolsSettings
from metallica.web import requests
from metallica.web.openapi import Document

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

UNDOCUMENTED = {"/v1/faults"}  # tests and the fault lab only, off unless METALLICA_FAULTS is set
DOCUMENTS: dict[str, Callable[[], Document]] = {
    "protools": protools_document,
    "generator": generator_document,
    "mailer": mailer_document,
}
SERVICES = tuple(DOCUMENTS)


def openapi_document(service: str) -> Document:
    return DOCUMENTS[service]()


def test_the_registry_names_each_service_and_its_document() -> None:
    assert services.NAMES == SERVICES
    for name in SERVICES:
        assert services.SERVICES[name].document() == openapi_document(name)


def app_of(service: str, tmp_path: Path) -> Starlette:
    """The service's app, not started (its routes need no database)."""
    url = f"sqlite:///{tmp_path}/{service}.db"
    if service == "protools":
        return create_protools(
            ProtoolsSettings(url, "t", generator_urls=("http://g",), mailer_urls=("http://m",))
        )
    if service == "generator":
        return create_generator(GeneratorSettings(url, "t", keys=GeneratorKeyring.generate("k1")))
    return create_mailer(MailerSettings(url, "t", tmp_path / "mail"))


def operations(app: Starlette) -> set[tuple[str, str]]:
    """``(path, method)`` of every route that serves something (a route that only answers 405
    is the absence of a method)."""
    found = set()
    for route in app.routes:
        if getattr(route, "path", "").startswith("/console"):
            continue  # the web console: pages for a browser, not the API the document describes
        assert isinstance(route, Route)
        if route.path in UNDOCUMENTED or route.name == "refuse":
            continue
        found |= {(route.path, method.lower()) for method in route.methods or ()} - {
            (route.path, "head")
        }
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_the_document_lists_every_route_of_the_service(service: str, tmp_path: Path) -> None:
    document = openapi_document(service)
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == operations(app_of(service, tmp_path))
    assert document["x-metallica-service"] == service


@pytest.mark.parametrize("service", SERVICES)
def test_the_document_is_served_without_a_token_and_is_valid_openapi(
    service: str, tmp_path: Path
) -> None:
    response = TestClient(app_of(service, tmp_path)).get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == openapi_document(service)
    schema = schemathesis.openapi.from_dict(response.json())  # validates it: OpenAPI 3.1
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results
    labels = {result.ok().label for result in results if isinstance(result, Ok)}
    assert "GET /healthz" in labels


@pytest.mark.parametrize("service", SERVICES)
def test_documents_are_fresh_copies(service: str) -> None:
    first = openapi_document(service)
    first["paths"].clear()
    first["components"]["schemas"]["Problem"].clear()
    second = openapi_document(service)
    assert second["paths"]
    assert second["components"]["schemas"]["Problem"]


# --- every limit a document states is the one its code enforces --------------------------------


def schema_of(document: Document, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def command_operation(document: Document) -> dict[str, Any]:
    """The one POST of a service's paths that takes an Idempotency-Key (its command)."""
    posts = [
        item["post"]
        for item in document["paths"].values()
        if "post" in item
        and any(p["name"] == "Idempotency-Key" for p in item["post"].get("parameters", []))
    ]
    assert len(posts) == 1
    operation: dict[str, Any] = posts[0]
    return operation


def parameter(operation: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [each for each in operation["parameters"] if each["name"] == name]
    assert len(found) == 1, name
    return found[0]


def documented(pattern: str, value: str) -> bool:
    """Whether ``value`` matches a document's pattern as JSON Schema reads it (search, not match:
    the patterns anchor themselves)."""
    return re.search(pattern, value) is not None


@pytest.mark.parametrize("service", SERVICES)
def test_every_command_states_the_request_limits_of_web_requests(service: str) -> None:
    operation = command_operation(openapi_document(service))
    key = parameter(operation, "Idempotency-Key")["schema"]
    assert key["maxLength"] == requests.IDEMPOTENCY_KEY_MAX_LENGTH
    assert key["pattern"] == requests.IDEMPOTENCY_KEY.pattern
    assert (
        f"1 to {requests.IDEMPOTENCY_KEY_MAX_LENGTH} printable"
        in (operation["responses"]["400"]["description"])
    )
    assert f"over {requests.MAX_BODY_BYTES} bytes" in operation["responses"]["413"]["description"]
    assert (
        f"nested deeper than {requests.MAX_JSON_DEPTH}"
        in (operation["responses"]["422"]["description"])
    )
    body = operation["requestBody"]["description"]
    assert f"at most {requests.MAX_BODY_BYTES} bytes" in body
    assert f"nested at most {requests.MAX_JSON_DEPTH} deep" in body


@pytest.mark.parametrize(
    ("service", "schema"), [("protools", "PasswordCreation"), ("generator", "PasswordRequest")]
)
def test_usernames_are_stated_as_usernames_validates_them(service: str, schema: str) -> None:
    username = schema_of(openapi_document(service), schema)["properties"]["username"]
    assert username["maxLength"] == usernames.MAX_LENGTH
    assert username["pattern"].startswith(usernames.USERNAME.pattern)
    assert username["description"] == usernames.RULE + "."
    for value in ("alice", "bob.smith-2", "a..b", "-a", "alice\n", "al ice", "ålice"):
        valid = usernames.USERNAME.fullmatch(value) is not None
        assert documented(username["pattern"], value) == valid, value


def test_addresses_are_stated_as_addresses_validates_them() -> None:
    stated = [
        schema_of(openapi_document("protools"), "PasswordCreation")["properties"]["email"]["anyOf"][
            0
        ],
        schema_of(openapi_document("mailer"), "Mail")["properties"]["to"],
    ]
    for address in stated:
        assert address["maxLength"] == addresses.MAX_LENGTH
        assert address["pattern"].startswith(addresses.ADDRESS.pattern)
        for value in ("a@example.com", "a b@example.com", "a@b@c", 'a"@b', "a@b\n", "a@-b"):
            valid = addresses.ADDRESS.fullmatch(value) is not None
            assert documented(address["pattern"], value) == valid, value


def test_the_mail_fields_are_stated_as_the_mail_domain_validates_them() -> None:
    mail = schema_of(openapi_document("mailer"), "Mail")["properties"]
    assert mail["subject"]["maxLength"] == mail_domain.MAX_SUBJECT
    assert mail["body"]["maxLength"] == mail_domain.MAX_BODY
    for code in [*range(0x00, 0xA0), 0xA0, 0x2027, 0x2028, 0x2029, 0x202A]:
        subject = f"a{chr(code)}b"
        try:
            mail_domain.validate("a@example.com", subject, "")
            valid = True
        except InvalidInput:
            valid = False
        assert documented(mail["subject"]["pattern"], subject) == valid, hex(code)


def test_the_listing_and_the_events_view_are_stated_as_protools_reads_them() -> None:
    paths = openapi_document("protools")["paths"]
    listing = paths["/v1/workflows"]["get"]
    limit = parameter(listing, "limit")
    assert limit["schema"]["maximum"] == history.LIST_LIMIT_MAX
    assert f"default {history.LIST_LIMIT_DEFAULT}" in limit["description"]
    assert parameter(listing, "status")["schema"]["enum"] == list(history.LIST_STATUSES)
    after = parameter(listing, "after")["schema"]["pattern"]
    assert documented(after, "9" * history.CURSOR_DIGITS)
    assert not documented(after, "9" * (history.CURSOR_DIGITS + 1))
    view = parameter(paths["/v1/workflows/{workflow_id}/events"]["get"], "view")["schema"]
    assert view == {"enum": list(history.EVENT_VIEWS), "default": history.EVENT_VIEW_DEFAULT}
    prefer = parameter(paths["/v1/workflows/{workflow_id}"]["get"], "Prefer")
    assert f"reads: {history.READ_WAIT_DEFAULT})" in prefer["description"]
