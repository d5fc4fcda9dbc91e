"""schemathesis against each service's own ``GET /openapi.json``, on a real server on loopback.

Each service runs as the service tests build it (protools with a real generator and mailer
behind it), behind uvicorn in a thread, on SQLite and on PostgreSQL. schemathesis loads the
document the service serves and, operation by operation, sends the cases of its examples,
coverage and fuzzing phases (data that fits the document and data that does not), with the
test token, checking
every answer: no 5xx, a documented status, content type, headers and body, invalid data and
missing required headers refused, no operation that ignores its token, 405 for methods the
document does not list. Deterministic (``derandomize``): CI sends the same cases every run.
Whatever it finds is a bug in the code or in the document.

Three nudges keep the cases useful (each says why below): deadlines that never pass, distinct
Idempotency-Keys for distinct bodies, and reads of workflows that exist.
"""

from __future__ import annotations

import hashlib
import re
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis.errors import HypothesisDeprecationWarning
from schemathesis import Case
from schemathesis.checks import load_all_checks, not_a_server_error
from schemathesis.core.result import Err
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from starlette.types import ASGIApp

from metallica import deadlines
from metallica.mail_sender.http import create_app as create_mailer
from metallica.mail_sender.settings import MailerSettings
from metallica.password_generator.http import create_app as create_generator
from metallica.password_generator.sealing import GeneratorKeyring
from metallica.password_generator.settings import GeneratorSettings
from metallica.problems import MEDIA_TYPE
from metallica.protools import groups
from metallica.protools.flow import FlowSettings
from metallica.protools.http import create_app as create_protools
from metallica.protools.settings import ProtoolsSettings
from tests.asgi_server import AsgiServer
from tests.conftest import MakeUrl
from tests.service.conftest import AUTH, TOKEN

# Two minutes on a quiet machine for protools' 2,000 cases; CI may run beside other work on two
# cores, where the default 120 s fired inside a case, which hypothesis then reported as flaky.
pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(600)]

# Cases per operation in the fuzzing phase (the examples and coverage phases add theirs); each
# service must have been sent at least MIN_CASES in all.
MAX_EXAMPLES = 500
MIN_CASES = 500
SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    missing_required_header,
    ignored_auth,
    unsupported_method,
]
LONG_DEADLINE = "60000"
KEY = re.compile(r"[!-~](?:[ -~]*[!-~])?")
WORKFLOW_ID = "workflow_id"
GROUPS = "/v1/subscriptions"
# The consumer groups' eleven operations get fewer cases each: they share one small set of rules
# (groups.py, tested on its own), and 500 each would double protools' run.
GROUP_EXAMPLES = 60
SETTINGS_FOR_GROUPS = hypothesis.settings(SETTINGS, max_examples=GROUP_EXAMPLES)

ServeApp = Callable[[ASGIApp], str]


@pytest.fixture
def serve() -> Iterator[ServeApp]:
    """``serve(app)``: its base URL, the app behind uvicorn on loopback until the test ends."""
    servers: list[AsgiServer] = []

    def start(app: ASGIApp) -> str:
        servers.append(AsgiServer(app).__enter__())
        return servers[-1].url

    yield start
    for server in reversed(servers):
        server.__exit__(None, None, None)


@pytest.fixture
def generator_url(database_url: MakeUrl, serve: ServeApp) -> str:
    settings = GeneratorSettings(
        database_url("generator"), TOKEN, keys=GeneratorKeyring.generate("k1")
    )
    return serve(create_generator(settings))


@pytest.fixture
def mailer_url(database_url: MakeUrl, tmp_path: Path, serve: ServeApp) -> str:
    return serve(create_mailer(MailerSettings(database_url("mailer"), TOKEN, tmp_path / "mail")))


@pytest.fixture
def protools_url(
    database_url: MakeUrl, serve: ServeApp, generator_url: str, mailer_url: str
) -> str:
    settings = ProtoolsSettings(
        database_url("protools"),
        TOKEN,
        generator_urls=(generator_url,),
        mailer_urls=(mailer_url,),
        poll_interval=0.1,
        retry_initial=0.05,
        retry_max=0.2,
        # The fuzzer checks the document, not overload: its commands asking Prefer: wait=0
        # come faster than their workflows end, and one that finds every place taken may not
        # queue (its wait is 0), so it gets the documented 503, which schemathesis counts as
        # a server error like any 5xx. Room for the workflows it starts keeps them admitted.
        flow=FlowSettings(admission_floor=64),
        # The log's stream ends after this long (with an 'end' event), so that each of the
        # fuzzer's cases of GET /v1/events/stream gets a whole answer it can check.
        stream_max_duration=0.05,
        # The test token reads the whole log: consumer groups answer it, not only with 403.
        log_readers=frozenset({"default"}),
    )
    return serve(create_protools(settings))


def header(case: Case[Any], name: str) -> object:
    return case.headers.get(name) if case.headers else None


def digest(value: object) -> int:
    return int(hashlib.sha256(repr(value).encode("utf-8", "surrogatepass")).hexdigest()[:8], 16)


@dataclass
class Fuzzing:
    """One service's run: the cases sent and answered, and what they taught."""

    url: str
    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[tuple[str, str, int, str]] = field(default_factory=Counter)
    workflows: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def send(self, case: Case[Any]) -> None:
        self.sent[case.operation.label] += 1
        self.long_deadline(case)
        self.distinct_key(case)
        self.existing_workflow(case)
        self.existing_group(case)
        self.short_pull(case)
        self.sent_as_drawn(case)
        response = case.call_and_validate(headers=dict(AUTH), checks=CHECKS)
        content_type = response.headers.get("content-type", [""])[0]
        body: Any = response.json() if content_type in (MEDIA_TYPE, "application/json") else None
        code = str(body["type"]).rsplit("/", 1)[-1] if content_type == MEDIA_TYPE else ""
        mode = case.meta.generation.mode.value if case.meta else ""
        self.answers[(case.operation.label, mode, response.status_code, code)] += 1
        if isinstance(body, dict) and isinstance(body.get(WORKFLOW_ID), str):
            self.workflows.append(body[WORKFLOW_ID])
        if case.operation.label == f"POST {GROUPS}" and response.status_code in (200, 201):
            self.groups.append(body["name"])

    def existing_group(self, case: Case[Any]) -> None:
        """Random names name no group (404): three cases in four of a drawn valid name go to
        a group the cases before created, so that pulls, acks and the rest are checked too."""
        drawn = (case.path_parameters or {}).get("name")
        if not self.groups or not isinstance(drawn, str) or digest(drawn) % 4 == 0:
            return
        if not groups.NAME.fullmatch(drawn):
            return  # an invalid name: the case is about the 404
        assert case.path_parameters is not None
        case.path_parameters["name"] = self.groups[digest(drawn) % len(self.groups)]

    @staticmethod
    def short_pull(case: Case[Any]) -> None:
        """A pull waits up to its ``wait`` (30 s) for events that the fuzzer never sends: a
        valid wait becomes 0 (invalid ones go as drawn)."""
        if not (case.operation.label.endswith("/pull") and isinstance(case.body, dict)):
            return
        wait = case.body.get("wait")
        number = isinstance(wait, int | float) and not isinstance(wait, bool)
        if number and 0 <= wait <= groups.PULL_WAIT_MAX:  # type: ignore[operator]
            case.body["wait"] = 0

    @staticmethod
    def sent_as_drawn(case: Case[Any]) -> None:
        """A drawn query parameter whose value is empty (None, [] or {}) is not sent at all, so
        a negative case made of an unknown one reaches the service as a valid request (and its
        200 would read as a refusal missed): it goes as ``name=``, which is what was drawn."""
        if case.query:
            for name, value in list(case.query.items()):
                if value is None or value == [] or value == {}:
                    case.query[name] = ""

    @staticmethod
    def long_deadline(case: Case[Any]) -> None:
        """A deadline that passes gets 503 deadline-passed, by design: a case's deadline
        becomes one that never does (values that are no deadline, ignored, go as drawn)."""
        value = header(case, deadlines.DEADLINE_HEADER)
        if case.headers and isinstance(value, str) and deadlines.parse(value) is not None:
            case.headers[deadlines.DEADLINE_HEADER] = LONG_DEADLINE

    @staticmethod
    def distinct_key(case: Case[Any]) -> None:
        """The drawn keys are few ("0", "A"...): as drawn, most commands would reuse a key with
        another body (a 422 the service tests cover). A valid key gets the body's digest; a key
        and a body drawn twice are still a repeat."""
        key = header(case, "Idempotency-Key")
        if case.headers and isinstance(key, str) and KEY.fullmatch(key):
            case.headers["Idempotency-Key"] = f"{key[:200]}.{digest(case.body):08x}"

    def existing_workflow(self, case: Case[Any]) -> None:
        """Random UUIDs name no workflow (404): three reads in four of a drawn UUID read one
        that the commands before made, so that its answer is checked too."""
        drawn = (case.path_parameters or {}).get(WORKFLOW_ID)
        if not self.workflows or not isinstance(drawn, str) or digest(drawn) % 4 == 0:
            return
        try:
            uuid.UUID(drawn)
        except ValueError:
            return  # an invalid id: the case is about the 400
        assert case.path_parameters is not None
        case.path_parameters[WORKFLOW_ID] = self.workflows[digest(drawn) % len(self.workflows)]

    def report(self) -> str:
        lines = [f"{sum(self.sent.values())} cases: {dict(self.sent)}"]
        lines += [f"  {key}: {n}" for key, n in sorted(self.answers.items())]
        return "\n".join(lines)


def described(error: BaseException) -> str:
    """An error and, for a group (hypothesis' "flaky": failed once, then not), each of its
    sub-exceptions: the cause is in them."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, BaseExceptionGroup):
        text += "".join(f"\n  - {described(inner)}" for inner in error.exceptions)
    cause = error.__cause__ or error.__context__
    if cause is not None and not isinstance(error, BaseExceptionGroup):
        text += f"\n    caused by {described(cause)}"
    return text


def fuzz(url: str) -> Fuzzing:
    """Every operation of the service at ``url``, all of its cases; fails naming each operation
    that failed and how. Driven here rather than by ``schemathesis.pytest.from_fixture``, whose
    pytest integration (4.32) sets ``Function._nodeid``, gone in pytest 9.2; the per-operation
    tests are the same ones it builds."""
    load_all_checks()
    schema: BaseSchema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.config.update(base_url=url)
    # A body over the size limit is refused with 413 before it is read: a refusal too.
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    run = Fuzzing(url)
    failures: list[str] = []
    parts = [
        (schema.exclude(path_regex=f"^{GROUPS}"), SETTINGS),
        (schema.include(path_regex=f"^{GROUPS}"), SETTINGS_FOR_GROUPS),
    ]
    for result in (
        found
        for part, settings in parts
        for found in get_all_tests(
            schema=part, test_func=run.send, settings=settings, given_kwargs={}
        )
    ):
        if isinstance(result, Err):
            raise result.err()
        operation, test = result.ok()
        try:
            with warnings.catch_warnings():
                # hypothesis warns when the global `random` moves while a strategy draws (the
                # warning is an error here, and the case then "fails" only on its first run,
                # reported as flaky). schemathesis' own strategies (4.x) do it now and then, and
                # so did protools' background tasks in the server thread until they got their
                # own generators (tests/unit/test_no_global_random.py). Neither says anything
                # about the service.
                warnings.filterwarnings(
                    "ignore",
                    message="Do not use the `random` module inside strategies",
                    category=HypothesisDeprecationWarning,
                )
                test()
        except Exception as error:  # every operation runs; every failure is reported
            failures.append(f"{operation.label}: {described(error)[:4000]}")
    print(run.report())
    assert not failures, "\n\n".join(failures)
    assert sum(run.sent.values()) >= MIN_CASES, run.report()
    return run


def test_the_generator_answers_as_its_document_says(generator_url: str) -> None:
    fuzz(generator_url)


def test_the_mailer_answers_as_its_document_says(mailer_url: str) -> None:
    fuzz(mailer_url)


def test_protools_answers_as_its_document_says(protools_url: str) -> None:
    run = fuzz(protools_url)
    reads = [label for label, _, status, _ in run.answers if status == 200]
    assert "GET /v1/workflows/{workflow_id}" in reads
    assert "GET /v1/workflows/{workflow_id}/events" in reads
