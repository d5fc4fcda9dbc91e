"""protools' event listing when a service stays down: every attempt is stored, and the compact
view sums the failures up, with their count and causes, in a listing that does not grow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from metallica.client import history_table
from metallica.protools.flow import FlowSettings
from metallica.protools.http import create_app
from metallica.protools.settings import ProtoolsSettings
from tests.conftest import MakeUrl
from tests.service.conftest import AUTH, TestClient, headers, problem_code

CREATE = "/v1/workflows/password-creation"
UNREACHABLE = ("http://127.0.0.1:9",)  # the discard port: nothing listens, connections are refused
FAILURES = 12


@pytest.fixture
def client(database_url: MakeUrl) -> Iterator[TestClient]:
    settings = ProtoolsSettings(
        database_url("protools"),
        "test-token",
        generator_urls=UNREACHABLE,
        mailer_urls=UNREACHABLE,
        retry_initial=0.01,
        retry_max=0.02,
        poll_interval=0.05,
        connect_timeout=1.0,
        call_timeout=1.0,
        lease_seconds=5.0,
        flow=FlowSettings(
            breaker_failures=1000,  # no circuit: the relay retries as fast as its policy lets
            retry_budget_floor=1000.0,
        ),
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def listed(client: TestClient, workflow_id: str, view: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/workflows/{workflow_id}/events?view={view}", headers=AUTH)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def failures_in(events: list[dict[str, Any]]) -> int:
    return sum(event["type"] == "StepAttemptFailed" for event in events)


def test_a_dead_generator_makes_one_compact_entry_with_the_count_and_the_cause(
    client: TestClient,
) -> None:
    accepted = client.post(
        CREATE, json={"username": "alice"}, headers=headers("k-dead", Prefer="wait=0")
    )
    assert accepted.status_code == 202, accepted.text
    workflow_id = accepted.json()["workflow_id"]
    deadline = time.monotonic() + 30
    every = listed(client, workflow_id, "all")
    while failures_in(every) < FAILURES and time.monotonic() < deadline:
        time.sleep(0.05)  # polling, while the relay retries
        every = listed(client, workflow_id, "all")
    assert failures_in(every) >= FAILURES, every

    compact = listed(client, workflow_id, "compact")

    assert [entry["type"] for entry in compact] == ["WorkflowStarted", "StepAttemptsFailed"]
    run = compact[1]
    data = run["data"]
    assert run["version"] == 2
    assert data["step"] == "generate_password"
    assert data["in_doubt"] is False
    assert data["count"] >= FAILURES
    assert data["first_attempt"] == 1
    assert data["last_attempt"] >= data["count"]
    assert data["last_time"] >= run["time"]
    assert data["causes"] == [
        {
            "reason": "connection-refused",
            "count": data["count"],
            "first_attempt": 1,
            "first_detail": "the service refused the connection",
            "last_attempt": data["last_attempt"],
            "last_detail": "the service refused the connection",
        }
    ]
    assert data["parked"] == []  # (parks between failures join the run: see test_engine)
    # The entry stands for exactly the stored events it covers: nothing is dropped.
    every = listed(client, workflow_id, "all")
    assert [event["version"] for event in every] == list(range(1, len(every) + 1))
    covered = every[1 : data["last_version"]]
    assert {event["type"] for event in covered} <= {"StepAttemptFailed", "StepParked"}
    assert failures_in(covered) == data["count"]
    assert len(covered) == data["count"]
    assert [event["data"]["attempt"] for event in covered if event["type"] == "StepAttemptFailed"][
        -1
    ] == data["last_attempt"]

    table = history_table(compact)
    assert f"2-{data['last_version']}" in table
    assert f"connection-refused x{data['count']}" in table


def test_the_events_view_is_all_or_compact(client: TestClient) -> None:
    accepted = client.post(
        CREATE, json={"username": "bob"}, headers=headers("k-view", Prefer="wait=0")
    )
    workflow_id = accepted.json()["workflow_id"]
    for view in ("", "full", "COMPACT", "compact\x00"):
        response = client.get(
            f"/v1/workflows/{workflow_id}/events", params={"view": view}, headers=AUTH
        )
        assert response.status_code == 400, view
        assert problem_code(response) == "bad-request"
        assert response.json()["field"] == "view"
    default = client.get(f"/v1/workflows/{workflow_id}/events", headers=AUTH)
    assert default.status_code == 200
    assert default.json()["events"][0]["type"] == "WorkflowStarted"
    assert all(event["type"] != "StepAttemptsFailed" for event in default.json()["events"])
