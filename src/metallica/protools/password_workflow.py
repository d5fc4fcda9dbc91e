"""The password-creation workflow: ask the generator for a password, mail it, return it.

A short definition on top of the generic engine: two steps, how each builds its call from the
workflow's state, and how each reads the service's answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metallica.protools.engine import (
    Call,
    Failed,
    Outcome,
    Response,
    Retry,
    RetryPolicy,
    Step,
    Succeeded,
    WorkflowDefinition,
    WorkflowState,
)
from metallica.web.problems import code_of

NAME = "password-creation"
GENERATE, MAIL = "generate_password", "send_mail"


def workflow_input(username: str, email: str | None, mail_domain: str) -> dict[str, Any]:
    """The workflow's input: who, and where the mail goes."""
    return {"username": username, "email": email, "recipient": email or f"{username}@{mail_domain}"}


def _step_key(state: WorkflowState, step: str) -> str:
    return f"{state.workflow_id}/{step}"


def _generate_request(state: WorkflowState) -> Call:
    return Call(
        destination="generator",
        method="POST",
        path="/v1/passwords",
        body={"username": state.input["username"]},
        idempotency_key=_step_key(state, GENERATE),
    )


def _mail_request(state: WorkflowState) -> Call:
    username = state.input["username"]
    password = state.results[GENERATE]["password"]
    return Call(
        destination="mailer",
        method="POST",
        path="/v1/mails",
        body={
            "to": state.input["recipient"],
            "subject": f"Your password for {username}",
            "body": f"Hello {username},\n\nYour new password is: {password}\n\n-- Metallica\n",
        },
        idempotency_key=_step_key(state, MAIL),
    )


def interpret_common(response: Response) -> Outcome | None:
    """How any service's non-2xx answer reads; None when the step must decide."""
    status = response.status
    if status == 409 and code_of(response.body) == "command-in-progress":
        return Retry(
            "in-progress", "the service is still processing this key", False, response.retry_after
        )
    if status in (429, 503):
        return Retry(
            "overloaded" if status == 429 else "unavailable",
            f"HTTP {status}",
            False,
            response.retry_after,
        )
    if status in (401, 403):
        # A configuration error (wrong token): retried until the deadline so an operator can fix it.
        return Retry("unauthorized", f"HTTP {status}", False, response.retry_after)
    if status >= 500:
        return Retry("server-error", f"HTTP {status}", True, response.retry_after)
    if 400 <= status < 500:
        return Failed(_problem_or_generic(response))
    return None


def _problem_or_generic(response: Response) -> Mapping[str, Any]:
    if "type" in response.body and "status" in response.body:
        # The service's request path means nothing to protools' clients.
        return {key: value for key, value in response.body.items() if key != "instance"}
    return {
        "type": "https://metallica.dev/problems/downstream-refused",
        "title": "Downstream refused the call",
        "status": response.status,
        "detail": f"the service answered HTTP {response.status}",
    }


def _interpret_generate(response: Response) -> Outcome:
    if response.status in (200, 201) and isinstance(response.body.get("password"), str):
        return Succeeded(
            {"username": response.body["username"], "password": response.body["password"]}
        )
    return interpret_common(response) or Retry("unexpected-answer", f"HTTP {response.status}", True)


def _interpret_mail(response: Response) -> Outcome:
    if response.status in (200, 202) and isinstance(response.body.get("id"), str):
        return Succeeded({"mail_id": response.body["id"]})
    return interpret_common(response) or Retry("unexpected-answer", f"HTTP {response.status}", True)


def _result(state: WorkflowState) -> dict[str, Any]:
    generated = state.results[GENERATE]
    return {"username": generated["username"], "password": generated["password"]}


def definition(*, deadline_seconds: float, retry: RetryPolicy) -> WorkflowDefinition:
    return WorkflowDefinition(
        name=NAME,
        steps=(
            Step(GENERATE, "generator", _generate_request, _interpret_generate, retry),
            Step(MAIL, "mailer", _mail_request, _interpret_mail, retry, finish_past_deadline=True),
        ),
        deadline_seconds=deadline_seconds,
        result=_result,
    )
