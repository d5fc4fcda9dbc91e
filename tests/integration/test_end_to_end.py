"""The three services as real processes, end to end, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time

import httpx
import pytest

from metallica.client import ProtoolsClient
from metallica.stack import LocalStack
from tests.integration.conftest import TOKEN, Observed, StackFactory

pytestmark = pytest.mark.slow


def test_nominal_password_is_returned_stored_and_mailed_once(
    client: ProtoolsClient, observed: Observed
) -> None:
    response = client.create_password("alice", key="k-alice")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["username"] == "alice"
    password = body["password"]
    assert observed.holds_password("alice", password)
    mails = observed.mails()
    assert len(mails) == 1
    assert password in mails[0]
    assert "To: alice@example.com" in mails[0]


def test_no_password_in_any_log(stack_factory: StackFactory) -> None:
    stack = stack_factory(METALLICA_LOG_LEVEL="DEBUG")
    with ProtoolsClient(stack.urls("protools")[0], TOKEN) as client:
        password = client.create_password("zoe", key="k-zoe").json()["password"]
        assert client.create_password("zoe", key="k-zoe-2").status_code == 409
    stack.stop()  # flush and close every log

    logs = sorted((stack.data_dir / "logs").iterdir())
    assert len(logs) == 3
    assert "metallica.step_attempted" in (stack.data_dir / "logs" / "protools-1.log").read_text()
    for log in logs:
        assert password not in log.read_text()


def test_event_history_is_ordered_and_redacted(client: ProtoolsClient) -> None:
    body = client.create_password("bob", email="bob@mail.test", key="k-bob").json()

    events = client.events(body["workflow_id"]).json()["events"]

    assert [event["version"] for event in events] == [1, 2, 3, 4]
    assert [event["type"] for event in events] == [
        "WorkflowStarted",
        "StepSucceeded",
        "StepSucceeded",
        "WorkflowCompleted",
    ]
    assert events[0]["data"]["input"]["recipient"] == "bob@mail.test"
    assert body["password"] not in str(events)
    status = client.workflow(body["workflow_id"]).json()
    assert status == {**body}


def test_username_taken_is_409_and_case_insensitive(
    client: ProtoolsClient, observed: Observed
) -> None:
    first = client.create_password("carol", key="k-carol-1")
    assert first.status_code == 200

    for username, key in (("carol", "k-carol-2"), ("CAROL", "k-carol-3")):
        taken = client.create_password(username, key=key)
        assert taken.status_code == 409
        assert taken.headers["content-type"] == "application/problem+json"
        assert taken.json()["type"].endswith("/username-taken")

    assert observed.password_count() == 1
    assert len(observed.mails()) == 1
    assert observed.holds_password("carol", first.json()["password"])


@pytest.mark.parametrize("body_username", [None, "", "no spaces please", "-leading-dash", "x" * 65])
def test_missing_or_invalid_username_is_422_and_nothing_is_called(
    client: ProtoolsClient, observed: Observed, body_username: str | None
) -> None:
    response = client.create_password(body_username, key="k-bad")

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/invalid-username")
    time.sleep(0.3)  # were anything enqueued, the relay would have called by now
    assert observed.generator_command_count() == 0
    assert observed.mails() == []


def test_replay_gets_the_same_answer_and_another_body_is_rejected(
    client: ProtoolsClient, observed: Observed
) -> None:
    first = client.create_password("dave", key="k-dave")
    again = client.create_password("dave", key="k-dave")
    other = client.create_password("erin", key="k-dave")

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert observed.password_count() == 1
    assert len(observed.mails()) == 1


def test_authentication_and_bad_input_get_problem_json(stack: LocalStack) -> None:
    base = stack.urls("protools")[0]
    assert httpx.get(base + "/healthz").status_code == 200
    no_token = httpx.post(base + "/v1/workflows/password-creation", json={"username": "x"})
    assert no_token.status_code == 401
    assert no_token.headers["content-type"] == "application/problem+json"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    no_key = httpx.post(
        base + "/v1/workflows/password-creation", json={"username": "x"}, headers=auth
    )
    assert no_key.status_code == 400
    bad_json = httpx.post(
        base + "/v1/workflows/password-creation",
        content=b"{not json",
        headers={**auth, "Idempotency-Key": "k-json", "Content-Type": "application/json"},
    )
    assert bad_json.status_code == 422
    malformed = httpx.get(base + "/v1/workflows/no-such-id", headers=auth)
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == "application/problem+json"
    unknown = httpx.get(
        base + "/v1/workflows/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12, headers=auth
    )
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


def test_protools_killed_mid_workflow_completes_once_after_restart(
    stack: LocalStack, client: ProtoolsClient, observed: Observed
) -> None:
    # Hold the generator call in flight, so the kill lands between the call and its outcome.
    generator = stack.urls("generator")[0]
    armed = httpx.post(
        generator + "/v1/faults",
        json={"point": "before_persist", "action": "delay", "delay_ms": 1500, "count": 1},
        headers={"Authorization": f"Bearer {stack.service_token}"},
    )
    assert armed.status_code == 201
    accepted = client.create_password("frank", key="k-frank", wait=0)
    assert accepted.status_code == 202
    workflow_id = accepted.json()["workflow_id"]
    time.sleep(0.5)

    stack.kill("protools")
    stack.restart("protools")

    done = client.workflow(workflow_id, wait=25)
    assert done.json()["status"] == "completed"
    password = done.json()["password"]
    assert observed.holds_password("frank", password)
    mails = observed.mails()
    assert len(mails) == 1
    assert password in mails[0]
    events = client.events(workflow_id).json()["events"]
    succeeded = [event["data"]["step"] for event in events if event["type"] == "StepSucceeded"]
    assert succeeded == ["generate_password", "send_mail"]
    assert client.create_password("frank", key="k-frank").json()["password"] == password


def test_two_protools_replicas_share_one_database(stack_factory: StackFactory) -> None:
    stack = stack_factory(replicas=2)
    observed = Observed(stack)
    passwords = {}
    for index, username in enumerate(["gina", "hank", "ivan", "judy"]):
        with ProtoolsClient(stack.urls("protools")[index % 2], TOKEN) as client:
            response = client.create_password(username, key=f"k-{username}")
            assert response.status_code == 200
            passwords[username] = response.json()["password"]
    # Either replica answers for a workflow the other one ran.
    with ProtoolsClient(stack.urls("protools")[1], TOKEN) as other:
        replay = other.create_password("gina", key="k-gina")
        assert replay.json()["password"] == passwords["gina"]
    for username, password in passwords.items():
        assert observed.holds_password(username, password)
    assert len(observed.mails()) == 4


def test_an_answer_dropped_after_the_commit_is_retried_to_the_same_password(
    stack: LocalStack, client: ProtoolsClient, observed: Observed
) -> None:
    armed = httpx.post(
        stack.urls("generator")[0] + "/v1/faults",
        json={"point": "after_persist", "action": "drop", "attempt": 1},
        headers={"Authorization": f"Bearer {stack.service_token}"},
    )
    assert armed.status_code == 201

    body = client.create_password("lena", key="k-lena", wait=15).json()

    assert body["status"] == "completed"
    events = client.events(body["workflow_id"]).json()["events"]
    first = events[1]
    assert first["type"] == "StepAttemptFailed"
    assert first["data"]["reason"] == "reset"
    assert first["data"]["in_doubt"] is True
    assert observed.holds_password("lena", body["password"])
    assert observed.password_count() == 1
    assert len(observed.mails()) == 1
