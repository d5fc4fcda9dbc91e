"""Log lines across the services: the caller's trace on every line of a request, one access
line per request, the trace passed on from protools to the generator and the mailer (the
workflow's own trace for the relay's later calls), and a 500's exception as a structured field.

The lines are read as the services write them: JSON through :func:`json_handler` on the root
logger, the generator and mailer served over real HTTP in this process.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from metallica import tracing
from metallica.mail_sender.http import create_app as create_mailer
from metallica.mail_sender.settings import MailerSettings
from metallica.password_generator.http import create_app as create_generator
from metallica.password_generator.settings import GeneratorSettings
from metallica.protools.password_workflow import GENERATE
from metallica.protools.password_workflow import MAIL as MAIL_STEP
from metallica.web.app import service_app
from metallica.web.logging import json_handler
from tests.conftest import MakeUrl
from tests.service.conftest import TOKEN, TestClient, headers
from tests.service.test_protools_edges import CREATE, Stack, outcome
from tests.waiting import eventually

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
MAIL = {"to": "alice@example.com", "subject": "Your password", "body": "pw: Xy7#kq!2pL"}
Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """Every line logged in this process during the test, parsed (INFO and up)."""
    stream = io.StringIO()
    handler = json_handler(stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def access_lines(found: list[dict[str, Any]], route: str) -> list[dict[str, Any]]:
    return [
        line for line in found if line["event"] == "metallica.access" and line.get("route") == route
    ]


def traced(found: list[dict[str, Any]], trace_id: str) -> list[dict[str, Any]]:
    return [line for line in found if line.get("trace_id") == trace_id]


def assert_access_line(line: dict[str, Any], method: str, status: int) -> None:
    assert (line["level"], line["method"], line["status"]) == ("info", method, status)
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0


# --- the generator and the mailer ----------------------------------------------------------------


def test_the_generators_lines_carry_the_callers_trace_and_one_access_line_each(
    database_url: MakeUrl, start_app: Callable[[ASGIApp], TestClient], lines: Lines
) -> None:
    client = start_app(
        create_generator(GeneratorSettings(database_url("generator"), TOKEN, faults_enabled=True))
    )
    armed = client.post(
        "/v1/faults",
        json={"point": "before_persist", "action": "error", "status": 503},
        headers=headers(),
    )
    assert armed.status_code == 201, armed.text

    # The fault fires on a storage thread, the 503 is answered by the error table: each line
    # of the request carries the trace the caller sent.
    failed = client.post(
        "/v1/passwords", json={"username": "alice"}, headers=headers("k1", traceparent=TRACEPARENT)
    )
    assert failed.status_code == 503, failed.text
    events = [line["event"] for line in traced(lines(), TRACE)]
    assert events == [
        "metallica.fault_injected",
        "metallica.request_failed",
        "metallica.access",
    ]
    created = client.post(
        "/v1/passwords", json={"username": "alice"}, headers=headers("k1", traceparent=TRACEPARENT)
    )
    assert created.status_code == 201, created.text

    found = lines()
    answered = access_lines(found, "/v1/passwords")
    assert [line["status"] for line in answered] == [503, 201]  # one line per request
    for line, response in zip(answered, (failed, created), strict=True):
        assert_access_line(line, "POST", response.status_code)
        assert (line["trace_id"], line["parent_id"]) == (TRACE, PARENT)
        assert (line["path"], line["client"]) == ("/v1/passwords", "default")
        # The answer names the span that served it: the one on the lines.
        assert response.headers["traceresponse"] == f"00-{TRACE}-{line['span_id']}-01"
        assert line["span_id"] != PARENT
    assert answered[0]["span_id"] != answered[1]["span_id"]
    (arming,) = access_lines(found, "/v1/faults")
    assert arming["trace_id"] != TRACE  # no header: a trace of its own
    assert "parent_id" not in arming
    text = "\n".join(json.dumps(line) for line in found)
    assert created.json()["password"] not in text
    assert TOKEN not in text


def test_the_mailers_request_is_traced_and_logged_once(
    database_url: MakeUrl,
    start_app: Callable[[ASGIApp], TestClient],
    lines: Lines,
    tmp_path: Path,
) -> None:
    client = start_app(create_mailer(MailerSettings(database_url("mailer"), TOKEN, tmp_path)))
    sent = client.post("/v1/mails", json=MAIL, headers=headers("m1", traceparent=TRACEPARENT))
    assert sent.status_code == 202, sent.text
    (line,) = traced(lines(), TRACE)
    assert line["event"] == "metallica.access"
    assert_access_line(line, "POST", 202)
    assert (line["route"], line["client"], line["parent_id"]) == ("/v1/mails", "default", PARENT)
    assert MAIL["body"] not in json.dumps(lines())


@pytest.mark.parametrize(
    "invalid",
    [
        "nonsense",
        TRACEPARENT.upper(),
        f"00-{'0' * 32}-{PARENT}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"ff-{TRACE}-{PARENT}-01",
        TRACEPARENT + "-more",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace_never_an_error(
    database_url: MakeUrl,
    start_app: Callable[[ASGIApp], TestClient],
    lines: Lines,
    tmp_path: Path,
    invalid: str,
) -> None:
    client = start_app(create_mailer(MailerSettings(database_url("mailer"), TOKEN, tmp_path)))
    sent = client.post("/v1/mails", json=MAIL, headers=headers("m1", traceparent=invalid))
    assert sent.status_code == 202, sent.text
    (line,) = access_lines(lines(), "/v1/mails")
    assert line["trace_id"] not in (TRACE, "0" * 32)
    assert "parent_id" not in line
    assert sent.headers["traceresponse"] == f"00-{line['trace_id']}-{line['span_id']}-01"


def test_an_unexpected_error_is_logged_under_the_trace_with_a_structured_exception(
    lines: Lines,
) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield

    app = service_app("probe", [Route("/broken", broken)], lifespan, max_in_flight=8)
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/broken", headers={"traceparent": TRACEPARENT})
    assert answer.status_code == 500
    assert "a bug" not in answer.text
    error, access = traced(lines(), TRACE)
    assert error["event"] == "metallica.unexpected_error"
    exception = error["exception"]
    assert (exception["type"], exception["message"]) == ("RuntimeError", "a bug")
    assert exception["frames"][-1]["function"] == "broken"
    assert access["event"] == "metallica.access"
    assert_access_line(access, "GET", 500)
    assert (access["route"], access["aborted"]) == ("/broken", "RuntimeError")


# --- protools passes the trace on ---------------------------------------------------------------


@pytest.fixture
def stack(database_url: MakeUrl, tmp_path: Path) -> Iterator[Stack]:
    with ExitStack() as running:
        yield Stack(database_url, tmp_path / "maildir", running)


def test_protools_passes_the_clients_trace_to_the_generator_and_the_mailer(
    stack: Stack, lines: Lines
) -> None:
    client = stack.protools()
    response = client.post(
        CREATE, json={"username": "alice"}, headers=headers("c1", traceparent=TRACEPARENT)
    )
    assert response.status_code == 200, response.text
    workflow_id = response.json()["workflow_id"]

    # The services log their access line once their answer is sent: wait for them.
    def downstream() -> list[dict[str, Any]]:
        found = lines()
        return access_lines(found, "/v1/passwords") + access_lines(found, "/v1/mails")

    assert eventually(lambda: len(downstream()) == 2)
    found = lines()
    (created,) = access_lines(found, CREATE)
    assert_access_line(created, "POST", 200)
    assert (created["trace_id"], created["parent_id"]) == (TRACE, PARENT)
    assert (created["client"], created["workflow_id"]) == ("default", workflow_id)
    generated, mailed = downstream()
    assert_access_line(generated, "POST", 201)
    assert_access_line(mailed, "POST", 202)
    # The same trace, each call its own span under protools' one.
    for line in (generated, mailed):
        assert line["trace_id"] == TRACE
        assert line["parent_id"] not in (PARENT, created["span_id"])
    assert generated["parent_id"] != mailed["parent_id"]
    steps = [line for line in found if line["event"] == "metallica.step_attempted"]
    assert [line["step"] for line in steps] == [GENERATE, MAIL_STEP]
    assert {(line["trace_id"], line["workflow_id"]) for line in steps} == {(TRACE, workflow_id)}


def test_the_relays_later_calls_carry_the_workflows_own_trace(stack: Stack, lines: Lines) -> None:
    # The first attempt, made in the accepting request, fails; the relay's recovery loop makes
    # the second, outside any request: under the trace the workflow id gives.
    stack.arm_generator(point="before_persist", action="error", status=503, attempt=1)
    client = stack.protools()
    response = client.post(
        CREATE,
        json={"username": "alice"},
        headers=headers("c1", traceparent=TRACEPARENT, Prefer="wait=0"),
    )
    assert response.status_code == 202, response.text
    workflow_id = response.json()["workflow_id"]
    assert outcome(client, workflow_id)["status"] == "completed"
    own_trace = uuid.UUID(workflow_id).hex
    assert own_trace == tracing.for_workflow(workflow_id).trace_id

    def generated() -> list[dict[str, Any]]:
        return access_lines(lines(), "/v1/passwords")

    assert eventually(lambda: len(generated()) == 2)
    assert eventually(lambda: len(access_lines(lines(), "/v1/mails")) == 1)
    first, second = generated()
    assert (first["status"], first["trace_id"]) == (503, TRACE)
    assert (second["status"], second["trace_id"]) == (201, own_trace)
    (mailed,) = access_lines(lines(), "/v1/mails")
    assert mailed["trace_id"] == own_trace  # handed over after the retry's success
    steps = [line for line in lines() if line["event"] == "metallica.step_attempted"]
    assert [(line["attempt"], line["trace_id"]) for line in steps] == [
        (1, TRACE),
        (2, own_trace),
        (1, own_trace),
    ]
    assert {line["workflow_id"] for line in steps} == {workflow_id}
