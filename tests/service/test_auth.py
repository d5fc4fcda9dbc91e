"""Who may call what: named clients at protools, a workflow's results for its own client only,
and protools' own credential towards the generator and the mailer, which no client holds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from metallica.mail_sender.http import create_app as create_mailer
from metallica.mail_sender.settings import MailerSettings
from metallica.password_generator.http import create_app as create_generator
from metallica.password_generator.settings import GeneratorSettings
from metallica.protools.http import create_app
from metallica.protools.settings import ProtoolsSettings
from metallica.web.auth import Credentials
from tests.asgi_server import AsgiServer
from tests.conftest import MakeUrl
from tests.service.conftest import TestClient, problem_code

CREATE = "/v1/workflows/password-creation"
ALICE, ALICE_NEXT, BOB = "alice-token-0123456789", "alice-token-next-0000", "bob-token-abcdefghijk"
SERVICE = "protools-service-token-00"


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


@dataclass
class Stack:
    protools: TestClient
    generator_url: str


@pytest.fixture
def stack(database_url: MakeUrl, tmp_path: Path) -> Iterator[Stack]:
    callers = Credentials.of([("protools", SERVICE)])
    generator_app = create_generator(
        GeneratorSettings(database_url("generator"), "", callers=callers)
    )
    spool = tmp_path / "maildir"
    mailer_app = create_mailer(MailerSettings(database_url("mailer"), "", spool, callers=callers))
    with ExitStack() as running:
        generator = running.enter_context(AsgiServer(generator_app))
        mailer = running.enter_context(AsgiServer(mailer_app))
        settings = ProtoolsSettings(
            database_url("protools"),
            "",
            (generator.url,),
            (mailer.url,),
            clients=Credentials.of([("alice", ALICE), ("alice", ALICE_NEXT), ("bob", BOB)]),
            service_token=SERVICE,
        )
        app = create_app(settings)
        client = running.enter_context(TestClient(app, raise_server_exceptions=False))
        yield Stack(client, generator.url)


def test_a_workflow_is_readable_only_by_the_client_that_started_it(stack: Stack) -> None:
    protools = stack.protools
    created = protools.post(
        CREATE, json={"username": "alice"}, headers=auth(ALICE, **{"Idempotency-Key": "k1"})
    )
    assert created.status_code == 200, created.text
    workflow, password = (
        f"/v1/workflows/{created.json()['workflow_id']}",
        created.json()["password"],
    )
    assert protools.get(workflow, headers=auth(ALICE)).json()["password"] == password
    assert protools.get(workflow, headers=auth(ALICE_NEXT)).status_code == 200  # same client
    for path in (workflow, workflow + "/events"):
        other = protools.get(path, headers=auth(BOB))
        assert other.status_code == 403
        assert problem_code(other) == "forbidden"
        assert password not in other.text
    # Bob replaying Alice's key learns nothing of her workflow either.
    replay = protools.post(
        CREATE, json={"username": "alice"}, headers=auth(BOB, **{"Idempotency-Key": "k1"})
    )
    assert replay.status_code == 403
    assert password not in replay.text


def test_no_token_or_a_wrong_one_is_a_401_problem(stack: Stack) -> None:
    for headers in ({}, auth("nope-nope-nope-nope"), {"Authorization": ALICE}, auth(SERVICE)):
        answer = stack.protools.post(CREATE, json={"username": "x"}, headers=headers)
        assert answer.status_code == 401, headers
        assert problem_code(answer) == "unauthorized"


def test_the_services_take_protools_credential_and_no_clients(stack: Stack) -> None:
    url = stack.generator_url + "/v1/passwords"
    body = {"username": "carol"}
    refused = httpx.post(url, json=body, headers=auth(ALICE, **{"Idempotency-Key": "g1"}))
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    taken = httpx.post(url, json=body, headers=auth(SERVICE, **{"Idempotency-Key": "g1"}))
    assert taken.status_code == 201


def test_a_client_lists_its_own_workflows_a_page_at_a_time(stack: Stack) -> None:
    protools = stack.protools
    mine = []
    for index in range(5):
        created = protools.post(
            CREATE,
            json={"username": f"user{index}"},
            headers=auth(ALICE, **{"Idempotency-Key": f"list-{index}"}),
        )
        assert created.status_code == 200, created.text
        mine.append(created.json()["workflow_id"])
    theirs = protools.post(
        CREATE, json={"username": "bobby"}, headers=auth(BOB, **{"Idempotency-Key": "list-bob"})
    )
    assert theirs.status_code == 200, theirs.text

    first = protools.get("/v1/workflows?limit=3", headers=auth(ALICE))
    assert first.status_code == 200, first.text
    page = first.json()
    assert [w["workflow_id"] for w in page["workflows"]] == mine[::-1][:3]  # newest first
    assert page["workflows"][0] == {
        "workflow_id": mine[-1],
        "status": "completed",
        "username": "user4",
        "started_at": page["workflows"][0]["started_at"],
    }
    assert "password" not in first.text  # a listing never carries a result
    second = protools.get(f"/v1/workflows?limit=3&after={page['next']}", headers=auth(ALICE))
    assert [w["workflow_id"] for w in second.json()["workflows"]] == mine[::-1][3:]
    assert second.json()["next"] is None
    # A token of the same client sees the same; another client sees only its own.
    assert len(protools.get("/v1/workflows", headers=auth(ALICE_NEXT)).json()["workflows"]) == 5
    bobs = protools.get("/v1/workflows?status=completed", headers=auth(BOB)).json()["workflows"]
    assert [w["username"] for w in bobs] == ["bobby"]
    assert protools.get("/v1/workflows?status=running", headers=auth(BOB)).json() == {
        "workflows": [],
        "next": None,
    }


@pytest.mark.parametrize(
    "query",
    [
        "status=done",
        "limit=0",
        "limit=101",
        "limit=x",
        "after=-1",
        "after=abc",
        "after=" + "9" * 30,
    ],
)
def test_a_listing_with_a_bad_parameter_is_a_400_naming_it(stack: Stack, query: str) -> None:
    response = stack.protools.get(f"/v1/workflows?{query}", headers=auth(ALICE))
    assert response.status_code == 400, response.text
    assert problem_code(response) == "bad-request"
    assert response.json()["field"] == query.split("=")[0]


def test_a_listing_needs_a_token(stack: Stack) -> None:
    response = stack.protools.get("/v1/workflows")
    assert response.status_code == 401
    assert problem_code(response) == "unauthorized"


@pytest.mark.parametrize(
    "query", ["stauts=running", "status=running&status=failed", "=0", "status="]
)
def test_a_listing_refuses_a_parameter_it_does_not_take(stack: Stack, query: str) -> None:
    response = stack.protools.get(f"/v1/workflows?{query}", headers=auth(ALICE))
    assert response.status_code == 400, response.text
    assert problem_code(response) == "bad-request"
