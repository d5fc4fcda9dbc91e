"""protools in-process, with both services unreachable: it accepts, records and keeps trying."""

from __future__ import annotations

import time
from typing import Any

from metallica.protools import store
from metallica.protools.http import create_app
from metallica.protools.settings import ProtoolsSettings
from tests.conftest import MakeUrl
from tests.service.conftest import AUTH, TestClient, headers, migrated, problem_code

CREATE = "/v1/workflows/password-creation"
UNREACHABLE = ("http://127.0.0.1:9",)  # the discard port: nothing listens, connections are refused
NO_WAIT = {"Prefer": "wait=0"}


def events_of(client: TestClient, workflow_id: str, at_least: int) -> list[dict[str, Any]]:
    """The workflow's events, once there are ``at_least`` of them."""
    deadline = time.monotonic() + 10
    while True:
        response = client.get(f"/v1/workflows/{workflow_id}/events", headers=AUTH)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        if len(events) >= at_least or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_an_unreachable_generator_leaves_the_workflow_running_and_retrying(
    database_url: MakeUrl,
) -> None:
    url = database_url("protools")
    settings = ProtoolsSettings(
        url,
        "test-token",
        generator_urls=UNREACHABLE,
        mailer_urls=UNREACHABLE,
        retry_initial=0.05,
        retry_max=0.2,
        poll_interval=0.1,
        connect_timeout=1.0,
        call_timeout=1.0,
        lease_seconds=2.0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        # Invalid commands are refused before anything is stored.
        for body in (
            {},
            {"username": ""},
            {"username": "-x"},
            {"username": "a", "role": "x"},
            {"username": "a", "email": "a\x00@example.com"},  # the mailer would refuse it
        ):
            refused = client.post(CREATE, json=body, headers=headers("bad", **NO_WAIT))
            assert refused.status_code == 422, body
            assert problem_code(refused) in {"invalid-username", "invalid-body"}
        with migrated(url, "protools") as database, database.transaction(write=False) as tx:
            assert store.read_all(tx) == []
            assert store.pending(tx) == []
            assert store.find_command(tx, "bad") is None

        unauthenticated = client.post(
            CREATE, json={"username": "alice"}, headers={"Idempotency-Key": "k1"}
        )
        assert unauthenticated.status_code == 401
        assert problem_code(unauthenticated) == "unauthorized"

        # Accepted: the client learns where to look, without waiting.
        accepted = client.post(CREATE, json={"username": "alice"}, headers=headers("k1", **NO_WAIT))
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        workflow_id = body["workflow_id"]
        assert body == {"workflow_id": workflow_id, "status": "running"}
        location = accepted.headers["location"]
        assert location == f"/v1/workflows/{workflow_id}"

        status = client.get(location, headers=AUTH)
        assert status.status_code == 200
        assert status.json() == {"workflow_id": workflow_id, "status": "running"}

        # The relay tried the generator at once, and will try again: not in doubt, nothing sent.
        events = events_of(client, workflow_id, at_least=3)
        assert [event["version"] for event in events] == list(range(1, len(events) + 1))
        assert events[0]["type"] == "WorkflowStarted"
        assert events[0]["data"]["input"]["username"] == "alice"
        retries = events[1:]
        assert {event["type"] for event in retries} == {"StepAttemptFailed"}
        for attempt, event in enumerate(retries, start=1):
            assert event["data"]["step"] == "generate_password"
            assert event["data"]["attempt"] == attempt
            assert event["data"]["reason"] == "connection-refused"
            assert event["data"]["in_doubt"] is False

        # A repeat of the command is the same workflow; another body under that key is refused.
        repeat = client.post(CREATE, json={"username": "alice"}, headers=headers("k1", **NO_WAIT))
        assert repeat.status_code == 202
        assert repeat.json()["workflow_id"] == workflow_id
        reused = client.post(CREATE, json={"username": "bob"}, headers=headers("k1", **NO_WAIT))
        assert reused.status_code == 422
        assert problem_code(reused) == "idempotency-key-reused"

        nobody = "/v1/workflows/00000000-0000-4000-8000-000000000000"
        missing = client.get(nobody, headers=AUTH)
        assert missing.status_code == 404
        assert problem_code(missing) == "not-found"
        assert client.get(nobody + "/events", headers=AUTH).status_code == 404
        malformed = client.get("/v1/workflows/no-such-workflow", headers=AUTH)
        assert malformed.status_code == 400
        assert problem_code(malformed) == "invalid-id"
        nul = client.get("/v1/workflows/%00/events", headers=AUTH)
        assert nul.status_code == 400
        # Found by schemathesis: this was read as the workflow whose id is "password-creation".
        wrong_method = client.get(CREATE, headers=AUTH)
        assert wrong_method.status_code == 405
        assert problem_code(wrong_method) == "method-not-allowed"
        assert wrong_method.headers["allow"] == "POST"

    with migrated(url, "protools") as database, database.transaction(write=False) as tx:
        streams = {event.stream_id for event in store.read_all(tx)}
        assert streams == {workflow_id}  # one workflow for all those requests
        (message,) = store.pending(tx)  # the generator call waits for the service to come back
        assert message["step"] == "generate_password"
