"""Overload protection, service by service: what protools admits, how it spares the services
it calls, how the services shed, and what the metrics show. On SQLite and PostgreSQL; the app
under test in-process, its generator and mailer real HTTP servers on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from metallica.deadlines import DEADLINE_HEADER
from metallica.password_generator.http import create_app as create_generator
from metallica.password_generator.settings import GeneratorSettings
from metallica.protools import engine
from metallica.protools.flow import FlowSettings
from tests.asgi_server import AsgiServer
from tests.conftest import MakeUrl
from tests.service.conftest import AUTH, TestClient, count, headers, problem_code
from tests.service.test_protools_edges import (
    CREATE,
    TOKEN,
    Stack,
    attempts,
    events,
    outcome,
    start,
)
from tests.waiting import eventually


@pytest.fixture
def stack(database_url: MakeUrl, tmp_path: Path) -> Iterator[Stack]:
    with ExitStack() as running:
        yield Stack(database_url, tmp_path / "maildir", running)


def metric(client: TestClient | httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample of ``GET /metrics``; 0 when absent."""
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def send(client: TestClient, key: str, username: str, wait: str = "0") -> httpx.Response:
    response: httpx.Response = client.post(
        CREATE, json={"username": username}, headers=headers(key, Prefer=f"wait={wait}")
    )
    return response


def test_a_saturated_replica_refuses_new_commands_fast_but_still_answers_replays(
    stack: Stack,
) -> None:
    stack.arm_generator(point="before_persist", action="delay", delay_ms=1500, count=1)
    client = stack.protools(flow=FlowSettings(admission_limit=1))
    first = start(client, "alice", key="k-alice")

    refused = send(client, "k-bob", "bob")
    assert refused.status_code == 503
    assert problem_code(refused) == "overloaded"
    assert refused.headers["Retry-After"] == "1"
    replay = send(client, "k-alice", "alice")  # a known key is never shed
    assert replay.status_code == 202
    assert replay.json()["workflow_id"] == first
    # Prefer: wait=0: a command that will not wait is refused at once, not queued.
    assert metric(client, "metallica_shed_total", reason="queue-timeout") == 1

    assert outcome(client, first)["status"] == "completed"
    # Its place is given back once the workflow is done: new commands are admitted again.
    assert eventually(lambda: send(client, "k-carol", "carol").status_code == 202)
    carol = send(client, "k-carol", "carol", wait="20")
    assert carol.json()["status"] == "completed"
    # Nothing of the refused command was stored: the same key starts it now, once.
    admitted = send(client, "k-bob", "bob", wait="20")
    assert admitted.status_code == 200
    assert admitted.json()["status"] == "completed"


def test_a_burst_over_the_limit_queues_briefly_and_every_command_is_served(
    stack: Stack,
) -> None:
    # Each generator call takes 200 ms: with 2 places, 8 commands at once queue for a while.
    stack.arm_generator(point="before_persist", action="delay", delay_ms=200, count=8)
    client = stack.protools(flow=FlowSettings(admission_limit=2, admission_floor=2))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: send(client, f"k{i}", f"user{i}", wait="20"), range(8)))
    assert [answer.status_code for answer in answers] == [200] * 8, [a.text for a in answers]
    assert all(answer.json()["status"] == "completed" for answer in answers)
    assert metric(client, "metallica_shed_total", reason="codel") == 0
    queued = metric(client, "metallica_admission_queued_seconds_count", outcome="admitted")
    assert queued >= 4  # at least 6 found both places taken, minus any freed meanwhile
    assert metric(client, "metallica_admission_queue_length") == 0
    started = [
        next(
            e
            for e in events(client, answer.json()["workflow_id"])
            if e["type"] == "WorkflowStarted"
        )
        for answer in answers
    ]
    waits = sorted(event["data"]["queued_ms"] for event in started)
    assert waits[0] == 0  # the first ones found a free place
    assert waits[-1] >= 150  # the last waited for about three generator calls


def test_a_queued_command_is_refused_when_its_own_wait_runs_out(stack: Stack) -> None:
    stack.arm_generator(point="before_persist", action="delay", delay_ms=2000, count=1)
    client = stack.protools(flow=FlowSettings(admission_limit=1, admission_floor=1))
    first = start(client, "alice")
    started = time.monotonic()
    refused = send(client, "k-bob", "bob", wait="0.3")
    waited = time.monotonic() - started
    assert refused.status_code == 503
    assert problem_code(refused) == "overloaded"
    assert int(refused.headers["Retry-After"]) >= 1
    # The problem says it too, as an integer (its document's type; schemathesis found a string).
    assert refused.json()["retry_after"] == int(refused.headers["Retry-After"])
    assert 0.3 <= waited < 1.5  # it queued for its whole wait, and no longer
    assert metric(client, "metallica_shed_total", reason="queue-timeout") == 1
    assert metric(client, "metallica_admission_queued_seconds_count", outcome="refused") == 1
    assert outcome(client, first)["status"] == "completed"
    # Nothing of bob's command was stored: the same key starts it now.
    assert send(client, "k-bob", "bob", wait="20").json()["status"] == "completed"


def test_a_command_refused_for_its_body_gives_its_admission_back(stack: Stack) -> None:
    # Found by schemathesis: each command admitted, then refused for its body (415, 413, 422),
    # kept its place under the admission limit for good; after a few, the replica refused
    # every new command with 503 overloaded until it restarted.
    client = stack.protools(flow=FlowSettings(admission_limit=1))
    refused = [
        client.post(CREATE, content=b'{"username": "a"}', headers=headers("k1")),
        client.post(CREATE, content=b"{", headers=headers("k2", **{"Content-Type": "text/json"})),
        client.post(CREATE, json={"username": "a", "admin": True}, headers=headers("k3")),
        client.post(CREATE, json={"username": "a" * 70_000}, headers=headers("k4")),
    ]
    assert [answer.status_code for answer in refused] == [415, 415, 422, 413]
    assert send(client, "k5", "alice", wait="20").json()["status"] == "completed"


def test_a_client_over_its_rate_gets_429_with_retry_after(stack: Stack) -> None:
    client = stack.protools(flow=FlowSettings(client_rate=0.5, client_burst=2))
    assert send(client, "k1", "alice").status_code == 202
    assert send(client, "k2", "bob").status_code == 202
    limited = send(client, "k3", "carol")
    assert limited.status_code == 429
    assert problem_code(limited) == "rate-limited"
    assert limited.headers["Retry-After"] == "2"
    assert limited.json()["retry_after"] == 2
    assert metric(client, "metallica_shed_total", reason="client-rate") == 1
    assert metric(client, "metallica_admission_queue_length") == 0  # it was never queued


def test_an_unwell_service_opens_the_circuit_and_workflows_park_then_resume(stack: Stack) -> None:
    # The generator fails its next 6 calls (503, after doing nothing): 2 failures in a row open
    # the circuit; the steps waiting meanwhile park, without calling and without failing.
    stack.arm_generator(point="before_persist", action="error", status=503, count=6)
    client = stack.protools(
        flow=FlowSettings(breaker_failures=2, breaker_open_seconds=0.3, retry_budget_floor=100)
    )
    workflows = [start(client, f"user{index}") for index in range(4)]

    for workflow_id in workflows:
        assert outcome(client, workflow_id)["status"] == "completed"
    history = [event for workflow_id in workflows for event in events(client, workflow_id)]
    parked = [event["data"] for event in history if event["type"] == engine.PARKED]
    assert parked, "no step parked while the circuit was open"
    assert {data["reason"] for data in parked} <= {"circuit-open", "retry-budget"}
    assert all(event["type"] != engine.FAILED for event in history)
    for workflow_id in workflows:
        # A parked attempt was not made: the attempt numbers recorded have no gap.
        numbers = [number for _, number in attempts(client, workflow_id)]
        assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert metric(client, "metallica_parked_total", downstream="generator", reason="circuit-open")
    assert metric(client, "metallica_breaker_state", downstream="generator") == 0  # closed again


def test_calls_carry_their_deadline_and_a_service_drops_work_nobody_waits_for(
    database_url: MakeUrl,
) -> None:
    url = database_url("generator")
    with AsgiServer(create_generator(GeneratorSettings(url, TOKEN))) as generator:

        def create(deadline_ms: str) -> httpx.Response:
            return httpx.post(
                generator.url + "/v1/passwords",
                json={"username": "alice"},
                headers={**AUTH, "Idempotency-Key": "k1", DEADLINE_HEADER: deadline_ms},
            )

        late = create("0")
        assert late.status_code == 503
        assert problem_code(late) == "deadline-passed"
        assert count(url, "generator", "count_passwords") == 0
        in_time = create("5000")
        assert in_time.status_code in (200, 201), in_time.text
        with httpx.Client(base_url=generator.url) as http:
            assert metric(http, "metallica_shed_total", reason="deadline-passed") == 1


def test_a_service_beyond_its_requests_in_flight_sheds_with_503_and_retry_after(
    database_url: MakeUrl,
) -> None:
    settings = GeneratorSettings(
        database_url("generator"), TOKEN, faults_enabled=True, max_in_flight=1
    )
    with AsgiServer(create_generator(settings)) as generator:
        fault = {"point": "before_persist", "action": "delay", "delay_ms": 1500, "count": 1}
        assert httpx.post(generator.url + "/v1/faults", json=fault, headers=AUTH).is_success
        slow_answer: dict[str, Any] = {}

        def slow() -> None:
            slow_answer["response"] = httpx.post(
                generator.url + "/v1/passwords",
                json={"username": "alice"},
                headers={**AUTH, "Idempotency-Key": "slow"},
                timeout=10,
            )

        thread = threading.Thread(target=slow)
        thread.start()
        with httpx.Client(base_url=generator.url) as http:
            # In flight: the slow request, and this scrape itself.
            assert eventually(lambda: metric(http, "metallica_http_in_flight") >= 2)
            shed = http.post(
                "/v1/passwords",
                json={"username": "bob"},
                headers={**AUTH, "Idempotency-Key": "fast"},
            )
            assert shed.status_code == 503
            assert problem_code(shed) == "overloaded"
            assert shed.headers["Retry-After"] == "1"
            assert http.get("/readyz").status_code == 200  # health is never shed
        thread.join()
        assert slow_answer["response"].status_code in (200, 201)


def test_metrics_show_traffic_by_route_workflows_and_the_outbox(stack: Stack) -> None:
    client = stack.protools()
    workflow_id = start(client, "alice")
    assert outcome(client, workflow_id)["status"] == "completed"
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    route = "/v1/workflows/password-creation"
    assert metric(client, "metallica_http_requests_total", route=route, status="202") == 1
    assert metric(client, "metallica_http_request_duration_seconds_count", route=route) == 1
    assert metric(client, "metallica_workflows_total", status="started") == 1
    assert eventually(lambda: metric(client, "metallica_workflows_total", status="completed") == 1)
    assert metric(client, "metallica_downstream_calls_total", downstream="mailer", attempt="first")
    assert metric(client, "metallica_concurrency_limit", scope="admission") >= 4
    assert metric(client, "metallica_concurrency_limit", scope="generator") >= 4
    assert metric(client, "metallica_retry_budget_available", downstream="generator") > 0
    for name in ("metallica_outbox_messages", "metallica_outbox_oldest_age_seconds"):
        assert name in text.text
    # A random path is counted under one label, never its own.
    client.get("/no/such/path/123", headers=AUTH)
    assert metric(client, "metallica_http_requests_total", route="unmatched", status="404") == 1


@pytest.mark.parametrize("bad", ["-5", "soon", "nan", ""])
def test_a_malformed_deadline_is_ignored_not_an_error(database_url: MakeUrl, bad: str) -> None:
    url = database_url("generator")
    with AsgiServer(create_generator(GeneratorSettings(url, TOKEN))) as generator:
        answer = httpx.post(
            generator.url + "/v1/passwords",
            json={"username": "alice"},
            headers={**AUTH, "Idempotency-Key": "k1", DEADLINE_HEADER: bad},
        )
        assert answer.status_code in (200, 201), answer.text
