"""How the password workflow reads the services' answers, and the calls it makes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from metallica.errors import (
    CommandInProgress,
    IdempotencyRecordExpired,
    InvalidUsername,
    KeyReusedWithOtherBody,
    PasswordLost,
    ServiceUnavailable,
    UsernameTaken,
)
from metallica.problems import from_error
from metallica.protools import password_workflow
from metallica.protools.engine import Failed, Outcome, Response, Retry, RetryPolicy, Succeeded
from metallica.protools.password_workflow import GENERATE, MAIL

DEFINITION = password_workflow.definition(deadline_seconds=60, retry=RetryPolicy())


def generate(status: int, body: Mapping[str, Any], retry_after: float | None = None) -> Outcome:
    return DEFINITION.step(GENERATE).interpret(Response(status, body, retry_after))


def mail(status: int, body: Mapping[str, Any], retry_after: float | None = None) -> Outcome:
    return DEFINITION.step(MAIL).interpret(Response(status, body, retry_after))


@pytest.mark.parametrize("status", [200, 201])
def test_a_password_is_a_success(status: int) -> None:
    outcome = generate(status, {"username": "Alice", "password": "pw-1", "extra": "ignored"})
    assert outcome == Succeeded({"username": "Alice", "password": "pw-1"})


def test_username_taken_fails_with_protools_own_problem() -> None:
    problem = from_error(UsernameTaken(), instance="/v1/passwords")
    # The service's own request path means nothing to protools' clients: it is dropped.
    assert generate(409, problem) == Failed(from_error(UsernameTaken()))


@pytest.mark.parametrize("odd_status", ["409", "banana", 200, None, 9999])
def test_the_clients_status_never_comes_from_a_downstream_body(odd_status: object) -> None:
    problem = {**from_error(UsernameTaken()), "status": odd_status, "detail": "x" * 10_000}
    outcome = generate(409, problem)
    assert outcome == Failed(from_error(UsernameTaken()))


def test_an_invalid_username_fails_the_command() -> None:
    problem = from_error(InvalidUsername(field="username"))
    assert generate(422, problem) == Failed(from_error(InvalidUsername()))


def test_an_expired_answer_fails_the_workflow_as_a_lost_password() -> None:
    # The generator made the password under this key and no longer keeps its answer: no retry
    # can ever read it back, so retrying until the deadline would only hide the loss.
    outcome = generate(410, from_error(IdempotencyRecordExpired()))
    assert outcome == Failed(from_error(PasswordLost()))
    assert outcome.error["status"] == 502
    assert "operator" in outcome.error["detail"]


def test_command_in_progress_is_retried_in_doubt_after_retry_after() -> None:
    # The service holds the key in an open transaction: it is acting on the call right now.
    problem = from_error(CommandInProgress())
    outcome = generate(409, problem, retry_after=2.0)
    assert outcome == Retry(
        "in-progress", "the service is still processing this key", True, retry_after=2.0
    )


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_server_error_is_retried_in_doubt(status: int) -> None:
    outcome = generate(status, {"type": "x", "status": status})
    assert isinstance(outcome, Retry)
    assert outcome.in_doubt is True
    assert outcome.reason == "server-error"


def test_unavailable_may_have_acted_and_is_retried_in_doubt() -> None:
    outcome = generate(503, from_error(ServiceUnavailable()), retry_after=4.0)
    assert outcome == Retry("unavailable", "HTTP 503 service-unavailable", True, retry_after=4.0)


def test_overloaded_is_retried_without_doubt_after_retry_after() -> None:
    outcome = generate(429, {}, retry_after=4.0)
    assert outcome == Retry("overloaded", "HTTP 429", in_doubt=False, retry_after=4.0)


@pytest.mark.parametrize("status", [401, 403])
def test_an_authentication_error_is_retried_so_an_operator_can_fix_it(status: int) -> None:
    outcome = generate(status, {})
    assert isinstance(outcome, Retry)
    assert outcome.in_doubt is False


@pytest.mark.parametrize("status", [400, 404, 405, 408, 410, 413, 421, 422, 451])
@pytest.mark.parametrize("body", [{}, {"oops": True}, from_error(KeyReusedWithOtherBody())])
def test_any_other_4xx_is_retried_never_failed(status: int, body: Mapping[str, Any]) -> None:
    # A proxy in between answers 404, 408, 413 or 421 of its own: not the service's verdict.
    outcome = generate(status, body)
    assert isinstance(outcome, Retry)
    assert outcome.reason == "refused"
    assert outcome.in_doubt is False
    assert str(status) in outcome.detail


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


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (409, from_error(UsernameTaken())),
        (422, from_error(InvalidUsername())),
        (422, from_error(KeyReusedWithOtherBody())),
        (400, {}),
        (404, {}),
        (413, {}),
        (500, {}),
        (503, {}),
        (202, {}),
    ],
)
def test_the_mail_step_never_fails_once_the_password_exists(
    status: int, body: Mapping[str, Any]
) -> None:
    assert isinstance(mail(status, body), Retry)


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
