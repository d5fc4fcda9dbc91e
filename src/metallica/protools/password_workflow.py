"""The password-creation workflow: ask the generator for a password, mail it, return it.

A short definition on top of the generic engine: two steps, how each builds its call from the
workflow's state, and how each reads the service's answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metallica import addresses, usernames
from metallica.config import default
from metallica.errors import (
    DeadlinePassed,
    IdempotencyRecordExpired,
    InvalidInput,
    InvalidUsername,
    MetallicaError,
    Overloaded,
    PasswordLost,
    UsernameTaken,
)
from metallica.problems import code_of, from_error
from metallica.protools.engine import (
    Call,
    Command,
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

NAME = "password-creation"
GENERATE, MAIL = "generate_password", "send_mail"
# Sealed at rest, masked in listings: the password, in the generator's answer, and the mail's
# body, which carries it.
SECRET_FIELDS = frozenset({"password", "body"})


def parse_command(body: Mapping[str, Any], mail_domain: str) -> tuple[str, str | None]:
    """``(username, email)`` from a password-creation body, or a 422: everything the workflow
    needs to end well is checked here, before anything is stored or called (the mail step must
    never fail on an address once a password exists)."""
    unknown = set(body) - {"username", "email"}
    if unknown:
        raise InvalidInput(f"unknown fields: {sorted(unknown)}", field=sorted(unknown)[0])
    username, email = body.get("username"), body.get("email")
    if not isinstance(username, str):
        raise InvalidUsername("'username' is required and must be a string", field="username")
    usernames.validate(username)
    if email is not None:
        if not isinstance(email, str):
            raise InvalidInput("'email' must be a string", field="email")
        addresses.validate(email, "email")
    else:
        addresses.validate(workflow_input(username, None, mail_domain)["recipient"], "username")
    return username, email


def workflow_input(username: str, email: str | None, mail_domain: str) -> dict[str, Any]:
    """The workflow's input: who, and where the mail goes."""
    return {"username": username, "email": email, "recipient": email or f"{username}@{mail_domain}"}


def _step_key(state: WorkflowState, step: str) -> str:
    return f"{state.workflow_id}/{step}"


def _generate_request(state: WorkflowState) -> Call:
    return Call(
        step=GENERATE,
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
        step=MAIL,
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


# A 503 with one of these problem types is a refusal made before any work was started.
SHED_CODES = frozenset({Overloaded.code, DeadlinePassed.code})


def interpret_common(response: Response) -> Retry:
    """How any service's answer that is neither the step's success nor one of its definite
    refusals reads: a retry, always. ``in_doubt`` when the service may have acted on the call.

    A 4xx is not proof that the command is wrong: a proxy in between answers 404, 408, 413 or
    421 of its own, and a service being redeployed may refuse for a while. Those are retried
    (until the deadline, unless the step is in doubt); only the answers a step names as
    definite end a workflow, and the mail step names none.
    """
    status, code = response.status, code_of(response.body)
    if status == 409 and code == "command-in-progress":
        # The service holds the key in an open transaction: it is acting on it right now.
        return Retry(
            "in-progress", "the service is still processing this key", True, response.retry_after
        )
    if status == 429 or (status == 503 and code in SHED_CODES):
        # Shed before any work (over its limit, or our deadline passed): it did not act.
        return Retry("overloaded", f"HTTP {status} {code}".strip(), False, response.retry_after)
    if status == 503:
        # Refused, or failed mid-way (a database lost during a commit): it may have acted.
        return Retry("unavailable", f"HTTP 503 {code}".strip(), True, response.retry_after)
    if status in (401, 403):
        # A configuration error (wrong token): retried until the deadline so an operator can fix it.
        return Retry("unauthorized", f"HTTP {status}", False, response.retry_after)
    if status >= 500:
        return Retry("server-error", f"HTTP {status}", True, response.retry_after)
    if 400 <= status < 500:
        return Retry("refused", f"HTTP {status} {code}".strip(), False, response.retry_after)
    return Retry("unexpected-answer", f"HTTP {status}", True, response.retry_after)


def _definite(error: MetallicaError) -> Failed:
    """A definite refusal, told in protools' own words: a downstream's body (its ``status``
    field included) never becomes what protools answers its clients."""
    return Failed(from_error(error))


def _interpret_generate(response: Response) -> Outcome:
    body = response.body
    if (
        response.status in (200, 201)
        and isinstance(body.get("password"), str)
        and isinstance(body.get("username"), str)
    ):
        return Succeeded({"username": body["username"], "password": body["password"]})
    code = code_of(body)
    if response.status == 409 and code == UsernameTaken.code:
        return _definite(UsernameTaken())
    if response.status == 422 and code == InvalidUsername.code:
        # protools checks usernames with the same rules when it accepts a command, so this
        # only happens across versions with other rules: the command itself is refused.
        return _definite(InvalidUsername())
    if response.status == 410 and code == IdempotencyRecordExpired.code:
        # The generator created the password under this step's key, but no longer keeps the
        # answer: no retry will ever read it back.
        return _definite(PasswordLost())
    return interpret_common(response)


def _interpret_mail(response: Response) -> Outcome:
    # Once the password exists, the mail must go out: no answer ends this step but success.
    # Its address was checked when the command was accepted, the mail domain at start.
    if response.status in (200, 202) and isinstance(response.body.get("id"), str):
        return Succeeded({"mail_id": response.body["id"]})
    return interpret_common(response)


def _result(state: WorkflowState) -> dict[str, Any]:
    generated = state.results[GENERATE]
    return {"username": generated["username"], "password": generated["password"]}


def definition(
    *, deadline_seconds: float, retry: RetryPolicy, mail_domain: str = default("mail-domain")
) -> WorkflowDefinition:
    """The password-creation workflow; ``mail_domain`` makes the recipient of a command that
    names no ``email`` (a bad one raises ValueError here, at start)."""
    addresses.validate_domain(mail_domain)

    def parse(body: Mapping[str, Any]) -> Command:
        username, email = parse_command(body, mail_domain)
        canonical = {"username": username, "email": email}
        return Command(canonical, workflow_input(username, email, mail_domain))

    return WorkflowDefinition(
        name=NAME,
        steps=(
            Step(GENERATE, "generator", _generate_request, _interpret_generate, retry),
            Step(MAIL, "mailer", _mail_request, _interpret_mail, retry, finish_past_deadline=True),
        ),
        deadline_seconds=deadline_seconds,
        result=_result,
        parse=parse,
        secret_fields=SECRET_FIELDS,
    )
