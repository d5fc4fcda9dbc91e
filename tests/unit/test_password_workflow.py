"""How the password workflow reads the services' answers, and the calls it makes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from metallica.errors import (
    CommandInProgress,
    InvalidUsername,
    KeyReusedWithOtherBody,
    UsernameTaken,
)
from metallica.protools import password_workflow
from metallica.protools.engine import Failed, Outcome, Response, Retry, RetryPolicy, Succeeded
from metallica.protools.password_workflow import GENERATE, MAIL
from metallica.web.problems import from_error

DEFINITION = password_workflow.definition(deadline_seconds=60, retry=RetryPolicy())


def generate(status: int, body: Mapping[str, Any], retry_after: float | None = None) -> Outcome:
    return DEFINITION.step(GENERATE).interpret(Response(status, body, retry_after))


def mail(status: int, body: Mapping[str, Any], retry_after: float | None = None) -> Outcome:
    return DEFINITION.step(MAIL).interpret(Response(status, body, retry_after))


@pytest.mark.parametrize("status", [200, 201])
def test_a_password_is_a_success(status: int) -> None:
    outcome = generate(status, {"username": "Alice", "password": "pw-1", "extra": "ignored"})
    assert outcome == Succeeded({"username": "Alice", "password": "pw-1"})


def test_username_taken_fails_with_the_services_problem() -> None:
    problem = from_error(UsernameTaken(), instance="/v1/passwords")
    # The service's own request path means nothing to protools' clients: it is dropped.
    assert generate(409, problem) == Failed(from_error(UsernameTaken()))


def test_command_in_progress_is_retried_without_doubt_after_retry_after() -> None:
    problem = from_error(CommandInProgress())
    outcome = generate(409, problem, retry_after=2.0)
    assert isinstance(outcome, Retry)
    assert outcome.in_doubt is False
    assert outcome.retry_after == 2.0
    assert outcome.reason == "in-progress"


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_server_error_is_retried_in_doubt(status: int) -> None:
    outcome = generate(status, {"type": "x", "status": status})
    assert isinstance(outcome, Retry)
    assert outcome.in_doubt is True
    assert outcome.reason == "server-error"


@pytest.mark.parametrize(("status", "reason"), [(503, "unavailable"), (429, "overloaded")])
def test_overload_is_retried_without_doubt_after_retry_after(status: int, reason: str) -> None:
    outcome = generate(status, {}, retry_after=4.0)
    assert outcome == Retry(reason, f"HTTP {status}", in_doubt=False, retry_after=4.0)


@pytest.mark.parametrize("status", [401, 403])
def test_an_authentication_error_is_retried_so_an_operator_can_fix_it(status: int) -> None:
    outcome = generate(status, {})
    assert isinstance(outcome, Retry)
    assert outcome.in_doubt is False


def test_invalid_input_fails_with_the_services_problem() -> None:
    problem = from_error(InvalidUsername(field="username"))
    assert generate(422, problem) == Failed(problem)
    reused = from_error(KeyReusedWithOtherBody())
    assert generate(422, reused) == Failed(reused)


def test_a_4xx_without_a_problem_body_fails_with_a_generic_problem() -> None:
    outcome = generate(400, {"oops": True})
    assert isinstance(outcome, Failed)
    assert outcome.error["status"] == 400
    assert outcome.error["type"].endswith("/downstream-refused")


@pytest.mark.parametrize(
    ("status", "body"), [(201, {}), (201, {"username": "a", "password": 7}), (204, {}), (302, {})]
)
def test_an_unexpected_answer_is_retried_in_doubt(status: int, body: Mapping[str, Any]) -> None:
    outcome = generate(status, body)
    assert isinstance(outcome, Retry)
    assert outcome.in_doubt is True
    assert outcome.reason == "unexpected-answer"


def test_a_mail_id_is_a_success() -> None:
    assert mail(202, {"id": "m-1"}) == Succeeded({"mail_id": "m-1"})
    assert mail(200, {"id": "m-1"}) == Succeeded({"mail_id": "m-1"})


def test_mail_errors_read_like_generator_errors() -> None:
    problem = from_error(KeyReusedWithOtherBody())
    assert mail(422, problem) == Failed(problem)
    unexpected = mail(202, {})
    assert isinstance(unexpected, Retry)
    assert unexpected.in_doubt is True
    server = mail(500, {})
    assert isinstance(server, Retry)
    assert server.in_doubt is True


def test_the_recipient_defaults_to_the_mail_domain() -> None:
    assert password_workflow.workflow_input("alice", None, "example.com") == {
        "username": "alice",
        "email": None,
        "recipient": "alice@example.com",
    }
    given = password_workflow.workflow_input("alice", "a@corp.test", "example.com")
    assert given["recipient"] == "a@corp.test"


def test_the_steps_call_the_generator_then_the_mailer() -> None:
    assert [step.name for step in DEFINITION.steps] == [GENERATE, MAIL]
    assert [step.destination for step in DEFINITION.steps] == ["generator", "mailer"]
    assert not DEFINITION.step(GENERATE).finish_past_deadline
    assert DEFINITION.step(MAIL).finish_past_deadline
