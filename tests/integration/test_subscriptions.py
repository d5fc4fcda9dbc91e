"""Durable subscriptions, tried from outside: consumer groups on real protools replicas, their
members in threads (metallica.client.Consumer), the CLI, and the problems bad requests get;
and the workflows read model rebuilt from the events (`metallica projections rebuild`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from metallica.cli import main
from metallica.client import Consumer, ProtoolsClient, SubscriptionRefused
from metallica.stack import LocalStack
from metallica.storage import open_database
from tests.integration.conftest import StackFactory
from tests.waiting import eventually

pytestmark = pytest.mark.slow

ALICE, AUDITOR = ("alice-token-0123456789", "auditor-token-0123456789")
CLIENTS = {
    "METALLICA_CLIENT_TOKENS": f"alice:{ALICE},auditor:{AUDITOR}",
    "METALLICA_LOG_READERS": "auditor",
    "METALLICA_LOG_POLL_INTERVAL": "0.1",
}
WAIT_SECONDS = 60.0


@pytest.fixture
def stack(stack_factory: StackFactory) -> LocalStack:
    return stack_factory(replicas=2, **CLIENTS)


@pytest.fixture
def auditors(stack: LocalStack) -> Iterator[list[ProtoolsClient]]:
    """One client of the reader per protools replica."""
    made = [ProtoolsClient(url, AUDITOR) for url in stack.urls("protools")]
    try:
        yield made
    finally:
        for client in made:
            client.close()


def create(url: str, username: str) -> str:
    with ProtoolsClient(url, ALICE) as client:
        answer = client.create_password(username, wait=10)
    assert answer.status_code == 200, answer.text
    workflow_id: str = answer.json()["workflow_id"]
    return workflow_id


def whole_log(client: ProtoolsClient) -> list[dict[str, Any]]:
    page = client.log(limit=1000).json()
    events: list[dict[str, Any]] = page["events"]
    return events


def test_members_on_two_replicas_share_the_log_once_each_in_order_per_workflow(
    stack: LocalStack, auditors: list[ProtoolsClient]
) -> None:
    create(
        stack.urls("protools")[0], "before0"
    )  # before the group: it starts at the start, so it gets it too
    created = auditors[0].create_group("audit", start="start", ack_wait=120)
    assert created.status_code == 201, created.text
    assert auditors[1].create_group("audit", start="start", ack_wait=120).status_code == 200

    received: list[tuple[str, dict[str, Any]]] = []
    lock, done = threading.Lock(), threading.Event()

    def consume(member: str, client: ProtoolsClient) -> None:
        consumer = Consumer(client, "audit", member, batch=4, wait=0.5)
        while not done.is_set():
            batch = consumer.pull()
            with lock:
                received.extend((member, message) for message in batch)
            if batch:
                consumer.ack(*batch)

    members = [
        threading.Thread(target=consume, args=(f"m{i}", auditors[i % 2]), daemon=True)
        for i in range(3)
    ]
    for thread in members:
        thread.start()
    try:
        for n in range(8):  # workflows made while the members consume, on both replicas
            create(stack.urls("protools")[n % 2], f"live{n}")
        stored = whole_log(auditors[0])
        assert eventually(lambda: len(received) >= len(stored), WAIT_SECONDS), len(received)
    finally:
        done.set()
        for thread in members:
            thread.join(WAIT_SECONDS)
    assert not any(thread.is_alive() for thread in members)

    positions = [message["position"] for _, message in received]
    assert sorted(positions) == [event["position"] for event in stored], "each event once"
    by_workflow: dict[str, list[int]] = {}
    for _, message in received:
        by_workflow.setdefault(message["workflow_id"], []).append(message["version"])
    for workflow_id, versions in by_workflow.items():
        assert versions == sorted(versions), f"{workflow_id}: {versions}"
    assert len({member for member, _ in received}) >= 2, "the work was shared"
    assert all(message["deliveries"] == 1 for _, message in received)
    assert all("sealed" not in str(message["data"]) for _, message in received)

    group = auditors[1].group("audit").json()
    assert group["unfinished"] == 0
    assert group["lag"]["positions"] == 0
    assert group["position"] == stored[-1]["position"]
    metrics = httpx.get(f"{stack.urls('protools')[0]}/metrics", timeout=10).text
    assert 'metallica_subscription_lag_positions{group="audit"} 0.0' in metrics


def test_an_unacked_event_comes_back_is_parked_and_replayed_and_the_cli_tells(
    stack: LocalStack, auditors: list[ProtoolsClient]
) -> None:
    url = ["--url", stack.urls("protools")[0], "--token", AUDITOR]
    runner = CliRunner()
    made = runner.invoke(
        main,
        ["subscriptions", "create", "slow", "--type", "WorkflowCompleted", "--ack-wait", "0.2",
         "--max-deliver", "2", *url],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "created" in made.output
    workflow_id = create(stack.urls("protools")[1], "unlucky")

    member = Consumer(auditors[1], "slow", "forgetful", wait=5)
    first = member.pull()
    assert [(m["workflow_id"], m["type"], m["deliveries"]) for m in first] == [
        (workflow_id, "WorkflowCompleted", 1)
    ]
    # Never acked: once its lease has run out, it comes back, to any member.
    again: list[dict[str, Any]] = []

    def delivered_again() -> bool:
        again.extend(member.pull())
        return bool(again)

    assert eventually(delivered_again, WAIT_SECONDS)
    assert again[0]["deliveries"] == 2
    with pytest.raises(SubscriptionRefused) as wrong:  # another member's ack
        Consumer(auditors[0], "slow", "other").ack(*again)
    assert wrong.value.response.status_code == 409
    assert wrong.value.response.json()["type"].endswith("/not-leased")
    # Its second lease runs out too: a pull then parks it.
    other = Consumer(auditors[0], "slow", "other", wait=0)
    assert eventually(
        lambda: other.pull() == [] and auditors[0].group("slow").json()["parked"] == 1,
        WAIT_SECONDS,
    )

    parked = runner.invoke(main, ["subscriptions", "parked", "slow", *url])
    assert parked.exit_code == 0, parked.output
    assert workflow_id in parked.output
    assert "delivered 2x, last to forgetful" in parked.output
    shown = runner.invoke(main, ["subscriptions", "show", "slow", *url])
    assert "parked         1" in shown.output
    assert "redeliveries   1" in shown.output
    listed = runner.invoke(main, ["subscriptions", "list", *url])
    assert listed.output.splitlines()[2].split()[:2] == ["slow", str(again[0]["position"])]

    replayed = runner.invoke(main, ["subscriptions", "replay", "slow", *url])
    assert "1 parked event(s) delivered again" in replayed.output
    back = Consumer(auditors[0], "slow", "fixed", wait=5).pull()
    assert [(m["position"], m["deliveries"]) for m in back] == [(again[0]["position"], 1)]

    rewound = runner.invoke(main, ["subscriptions", "rewind", "slow", "--to", "start", *url])
    assert "now reads the log after position 0" in rewound.output
    assert [m["position"] for m in Consumer(auditors[1], "slow", "x", wait=5).pull()] == [
        again[0]["position"]
    ]
    gone = runner.invoke(main, ["subscriptions", "delete", "slow", *url])
    assert gone.exit_code == 0
    missing = runner.invoke(main, ["subscriptions", "show", "slow", *url])
    assert missing.exit_code == 1
    assert "unknown-group" in missing.output


def waiting_pulls(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    for line in metrics.splitlines():
        if line.startswith("metallica_log_waiting_pulls "):
            return float(line.split()[1])
    raise AssertionError("no metallica_log_waiting_pulls in the metrics")


def test_a_waiting_pull_is_answered_by_a_new_event_or_a_lease_run_out_not_by_polling(
    stack_factory: StackFactory, backend: str
) -> None:
    """With polling every 30 s, a pull that waits 25 s is answered as soon as the log grows (on
    PostgreSQL by another replica's commit, announced; on SQLite by this replica's own) and as
    soon as a lease it waits on runs out: the tailer and the lease's deadline wake it."""
    stack = stack_factory(replicas=2, **{**CLIENTS, "METALLICA_LOG_POLL_INTERVAL": "30"})
    here, there = stack.urls("protools")
    writer = there if backend == "postgres" else here  # SQLite announces nothing across files
    with ProtoolsClient(here, AUDITOR) as auditor:
        assert auditor.create_group("live", start="end", ack_wait=2).status_code == 201
        answers: list[tuple[list[int], float]] = []

        def pull(member: str) -> None:
            started = time.monotonic()
            answer = auditor.pull("live", member, batch=1, wait=25)
            assert answer.status_code == 200, answer.text
            positions = [m["position"] for m in answer.json()["messages"]]
            answers.append((positions, time.monotonic() - started))

        first = threading.Thread(target=pull, args=("m1",))
        first.start()
        assert eventually(lambda: waiting_pulls(here) == 1, WAIT_SECONDS)
        create(writer, "woken")  # 6 events, the first to m1, the rest held back
        first.join(30)
        ((positions, waited),) = answers
        assert len(positions) == 1
        assert waited < 15, f"answered after {waited:.1f} s: by the 25 s wait, not by the tailer"

        # m1 never acks: m2's pull waits for the workflow's first event (the others are held
        # back behind it) and gets it when m1's lease runs out, 2 s later.
        second = threading.Thread(target=pull, args=("m2",))
        second.start()
        second.join(30)
        positions_again, waited_again = answers[1]
        assert positions_again == positions
        assert waited_again < 15, f"answered after {waited_again:.1f} s: the lease's end woke none"


BAD_REQUESTS: list[tuple[str, str, dict[str, Any] | None, int, str, str | None]] = [
    ("GET", "/v1/subscriptions/nobody", None, 404, "unknown-group", None),
    ("POST", "/v1/subscriptions/nobody/pull", {"member": "m"}, 404, "unknown-group", None),
    ("POST", "/v1/subscriptions", {"name": "Bad Name"}, 422, "invalid-body", "name"),
    ("POST", "/v1/subscriptions", {"name": "g", "start": 10**9}, 404,
     "position-past-head", "start"),
    ("POST", "/v1/subscriptions", {"name": "g", "ack_wait": 0}, 422, "invalid-body",
     "ack_wait"),
    ("POST", "/v1/subscriptions", {"name": "g", "colour": 1}, 422, "invalid-body", "colour"),
    ("POST", "/v1/subscriptions/known/pull", {"member": "m", "batch": 1001}, 422,
     "invalid-body", "batch"),
    ("POST", "/v1/subscriptions/known/pull", {}, 422, "invalid-body", "member"),
    ("POST", "/v1/subscriptions/known/ack", {"member": "m", "positions": [1]}, 409,
     "not-leased", None),
    ("POST", "/v1/subscriptions/known/ack", {"member": "m", "positions": ["1"]}, 422,
     "invalid-body", "positions"),
    ("POST", "/v1/subscriptions/known/rewind", {"to": "yesterday"}, 422, "invalid-body",
     "to"),
    ("GET", "/v1/subscriptions/known/parked?limit=0", None, 400, "bad-request", "limit"),
]  # fmt: skip


def test_bad_requests_to_consumer_groups_are_problems_that_name_what_is_wrong(
    stack_factory: StackFactory,
) -> None:
    stack = stack_factory(**CLIENTS)
    with ProtoolsClient(stack.urls("protools")[0], AUDITOR) as auditor:
        assert auditor.create_group("known").status_code == 201
    for method, path, body, status, code, field in BAD_REQUESTS:
        answer = httpx.request(
            method,
            stack.urls("protools")[0] + path,
            json=body,
            headers={"Authorization": f"Bearer {AUDITOR}"},
            timeout=10,
        )
        assert answer.status_code == status, (path, body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["type"].endswith(f"/{code}"), (path, body, problem)
        assert problem.get("field") == field, (path, body, problem)


def test_only_a_reader_of_the_whole_log_may_use_consumer_groups(
    stack_factory: StackFactory,
) -> None:
    stack = stack_factory(**CLIENTS)
    with ProtoolsClient(stack.urls("protools")[0], ALICE) as alice:
        for answer in (alice.create_group("mine"), alice.groups(), alice.pull("mine", "m")):
            assert answer.status_code == 403, answer.text
            assert "METALLICA_LOG_READERS" in answer.json()["detail"]
    with ProtoolsClient(stack.urls("protools")[0], AUDITOR) as auditor:
        created = auditor.create_group("mine", max_deliver=3)
        assert created.status_code == 201
        clash = auditor.create_group("mine", max_deliver=4)
        assert clash.status_code == 409
        assert clash.json()["type"].endswith("/group-exists")


def test_projections_rebuild_checks_and_rewrites_the_workflows_read_model(
    stack_factory: StackFactory,
) -> None:
    stack = stack_factory(**CLIENTS)
    for name in ("ann", "bob"):
        create(stack.urls("protools")[0], name)
    url = ["--database-url", stack.database_url("protools")]
    runner = CliRunner()
    checked = runner.invoke(main, ["projections", "rebuild", "--check", *url])
    assert checked.exit_code == 0, checked.output
    assert "workflows: 2 from the events; the live model: 0 missing, 0 extra, 0 changed" in (
        checked.stdout
    )
    database = open_database(stack.database_url("protools"), "protools", pool_size=1)
    try:
        with database.transaction() as tx:
            tx.run_script("UPDATE workflows SET status = 'failed'")
    finally:
        database.close()
    drifted = runner.invoke(main, ["projections", "rebuild", "--check", *url])
    assert drifted.exit_code == 1
    assert "2 changed" in drifted.stdout
    rebuilt = runner.invoke(main, ["projections", "rebuild", *url])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "2 rebuilt from the events; the live model had 0 missing, 0 extra, 2 changed" in (
        rebuilt.stdout
    )
    with ProtoolsClient(stack.urls("protools")[0], ALICE) as alice:
        listed = alice.list_workflows(status="completed").json()["workflows"]
    assert sorted(w["username"] for w in listed) == ["ann", "bob"]
