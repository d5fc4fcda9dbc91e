"""The services' OpenAPI documents: one per service, every route in it, served without a token.

That the services answer as their documents say is for schemathesis (tests/fuzz).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import schemathesis
from schemathesis.core.result import Ok
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.routing import Route

from metallica.mail_sender.http import create_app as create_mailer
from metallica.mail_sender.settings import MailerSettings
from metallica.password_generator.http import create_app as create_generator
from metallica.password_generator.sealing import GeneratorKeyring
from metallica.password_generator.settings import GeneratorSettings
from metallica.protools.http import create_app as create_protools
from metallica.protools.settings import ProtoolsSettings
from metallica.web.openapi import SERVICES, openapi_document

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

UNDOCUMENTED = {"/v1/faults"}  # tests and the fault lab only, off unless METALLICA_FAULTS is set


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


def test_documents_are_fresh_copies() -> None:
    first = openapi_document("protools")
    first["paths"].clear()
    assert openapi_document("protools")["paths"]
