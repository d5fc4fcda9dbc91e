"""protools as a broker, tried from outside: the log read a page at a time and followed live
over Server-Sent Events, on real processes, on both backends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from metallica.cli import main
from metallica.client import ProtoolsClient
from metallica.stack import LocalStack
from tests.integration.conftest import TOKEN, StackFactory
from tests.integration.test_cli import Output

pytestmark = pytest.mark.slow

ALICE, BOB, AUDITOR = ("alice-token-0123456789", "bob-token-0123456789", "auditor-token-0123456789")
CLIENTS = {
    "METALLICA_CLIENT_TOKENS": f"alice:{ALICE},bob:{BOB},auditor:{AUDITOR}",
    "METALLICA_LOG_READERS": "auditor",
    "METALLICA_LOG_POLL_INTERVAL": "0.1",
    # Streams rotate every second: the live test's follower resumes across several of them.
    "METALLICA_STREAM_MAX_DURATION": "1",
    # Heartbeats between events: a follower must take them for what they are (httpx-sse hands
    # one on as a message with no data once an id was seen).
    "METALLICA_STREAM_HEARTBEAT": "0.1",
}
PASSWORD_EVENT = "StepSucceeded"


@pytest.fixture
def stack(stack_factory: StackFactory) -> LocalStack:
    return stack_factory(**CLIENTS)


@pytest.fixture
def clients(stack: LocalStack) -> Iterator[dict[str, ProtoolsClient]]:
    url = stack.urls("protools")[0]
    made = {
        name: ProtoolsClient(url, token)
        for name, token in (
            ("alice", ALICE),
            ("bob", BOB),
            ("auditor", AUDITOR),
            ("default", TOKEN),
        )
    }
    try:
        yield made
    finally:
        for client in made.values():
            client.close()


def create(client: ProtoolsClient, username: str) -> dict[str, Any]:
    answer = client.create_password(username, wait=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def whole_log(client: ProtoolsClient, **params: Any) -> list[dict[str, Any]]:
    """Every event the client may read, a page at a time (small pages, to cross many)."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.log(after=after, limit=3, **params)
        assert page.status_code == 200, page.text
        body = page.json()
        events += body["events"]
        assert body["next"] >= after
        if body["next"] == body["head"] or (not body["events"] and body["next"] == after):
            return events
        after = body["next"]


def test_each_client_reads_its_own_workflows_events_and_a_reader_reads_them_all(
    clients: dict[str, ProtoolsClient],
) -> None:
    alice = [create(clients["alice"], f"alice{i}")["workflow_id"] for i in range(2)]
    bob = create(clients["bob"], "bob0")["workflow_id"]

    everything = whole_log(clients["auditor"])
    positions = [event["position"] for event in everything]
    assert positions == sorted(set(positions)), "in log order, each once"
    assert {event["workflow_id"] for event in everything} == {*alice, bob}
    per_workflow = {
        wf: [e["version"] for e in everything if e["workflow_id"] == wf] for wf in (*alice, bob)
    }
    assert all(versions == list(range(1, len(versions) + 1)) for versions in per_workflow.values())

    own = whole_log(clients["alice"])
    assert own == [event for event in everything if event["workflow_id"] in alice]
    assert {event["workflow_id"] for event in whole_log(clients["bob"])} == {bob}
    assert whole_log(clients["default"]) == []

    started = whole_log(clients["auditor"], types=["WorkflowStarted", "WorkflowCompleted"])
    assert [e["type"] for e in started].count("WorkflowStarted") == 3
    assert {e["type"] for e in started} == {"WorkflowStarted", "WorkflowCompleted"}
    one = whole_log(clients["auditor"], workflow_id=bob)
    assert one == [event for event in everything if event["workflow_id"] == bob]

    # The password is never in the log: masked in the generator's answer, never sealed text.
    answers = [
        e for e in everything if e["type"] == PASSWORD_EVENT and "password" in e["data"]["result"]
    ]
    assert len(answers) == 3
    assert all(e["data"]["result"]["password"] == "***" for e in answers), answers
    assert "sealed" not in str(everything)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=abc", "after"),
        ("after=-1", "after"),
        ("type=A,%20B", "type"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("type=no%20such", "type"),
        ("workflow_id=nope", "workflow_id"),
        ("colour=red", "colour"),
        ("after=1&after=2", "after"),
    ],
)
def test_bad_reads_of_the_log_are_problems_naming_the_parameter(
    clients: dict[str, ProtoolsClient], stack: LocalStack, query: str, field: str
) -> None:
    for path in ("/v1/events", "/v1/events/stream"):
        if path.endswith("stream") and field == "limit":
            continue
        answer = httpx.get(
            f"{stack.urls('protools')[0]}{path}?{query}",
            headers={"Authorization": f"Bearer {ALICE}"},
            timeout=10,
        )
        assert answer.status_code == 400, (path, query, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["field"] == field


def test_a_bad_last_event_id_is_a_problem(stack: LocalStack) -> None:
    for value, status in (("x1", 400), ("1.5", 400), ("99999999", 404)):
        answer = httpx.get(
            f"{stack.urls('protools')[0]}/v1/events/stream",
            headers={"Authorization": f"Bearer {ALICE}", "Last-Event-ID": value},
            timeout=10,
        )
        assert answer.status_code == status, answer.text
        assert answer.json()["field"] == "Last-Event-ID"


def test_a_position_past_the_head_is_not_found(stack: LocalStack) -> None:
    for path in ("/v1/events", "/v1/events/stream"):
        answer = httpx.get(
            f"{stack.urls('protools')[0]}{path}?after=99999999",
            headers={"Authorization": f"Bearer {ALICE}"},
            timeout=10,
        )
        assert answer.status_code == 404, answer.text
        problem = answer.json()
        assert problem["type"].endswith("/position-past-head")
        assert problem["field"] == "after"


def test_a_follower_sees_every_event_once_live_and_resumes_after_its_last(
    clients: dict[str, ProtoolsClient],
) -> None:
    before = create(clients["alice"], "early")["workflow_id"]
    received: list[dict[str, Any]] = []
    enough = threading.Event()
    wanted = 4  # workflows whose completion the follower must see

    def follow() -> None:
        for event in clients["auditor"].follow_log(idle_timeout=20):
            received.append(event)
            if sum(e["type"] == "WorkflowCompleted" for e in received) >= wanted:
                enough.set()
                return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    later = [create(clients["bob"], f"live{i}")["workflow_id"] for i in range(wanted - 1)]
    assert enough.wait(30), f"the follower saw {len(received)} events"
    follower.join(10)
    stored = whole_log(clients["auditor"])
    assert [e["position"] for e in received] == [e["position"] for e in stored][: len(received)]
    assert received == stored[: len(received)]
    assert {e["workflow_id"] for e in received} >= {before, *later}

    # Resuming from a position: exactly what follows it, from the database.
    middle = received[len(received) // 2]["position"]
    resumed = []
    for event in clients["auditor"].follow_log(after=middle, idle_timeout=20):
        resumed.append(event)
        if event["position"] == received[-1]["position"]:
            break
    assert resumed == [e for e in received if e["position"] > middle]


def test_a_stream_ends_after_its_longest_time_saying_where_to_resume(
    clients: dict[str, ProtoolsClient], stack: LocalStack
) -> None:
    create(clients["alice"], "rotated")
    head = clients["alice"].log().json()["head"]
    started = time.monotonic()
    with httpx.stream(
        "GET",
        f"{stack.urls('protools')[0]}/v1/events/stream",
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=10,
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        text = "".join(answer.iter_text())  # the replica ends it
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 8, elapsed
    blocks = [block for block in text.replace("\r\n", "\n").split("\n\n") if block.strip()]
    lines = [line for block in blocks for line in block.splitlines()]
    ids = [int(line[3:]) for line in lines if line.startswith("id:")]
    assert ids == sorted(ids)
    assert ids[-1] == head
    assert blocks[-1].startswith("event: end")
    end = json.loads(blocks[-1].split("data: ", 1)[1])
    assert end["reason"] == "max-duration"
    assert end["resume_after"] == head


def test_events_tail_and_export_print_the_log_a_reader_may_see(
    clients: dict[str, ProtoolsClient], stack: LocalStack, tmp_path: Path
) -> None:
    create(clients["alice"], "tailed")
    create(clients["bob"], "exported")
    everything = whole_log(clients["auditor"])
    url = ["--url", stack.urls("protools")[0]]
    runner = CliRunner()

    tail = runner.invoke(main, ["events", "tail", "--from", "0", *url, "--token", AUDITOR])
    assert tail.exit_code == 0, tail.output
    lines = tail.stdout.splitlines()
    assert [int(line.split()[0]) for line in lines] == [e["position"] for e in everything]
    assert "'tailed'" in tail.stdout
    assert "'exported'" in tail.stdout

    mine = runner.invoke(main, ["events", "tail", "--lines", "1000", *url, "--token", ALICE])
    assert mine.exit_code == 0, mine.output
    assert "'tailed'" in mine.stdout
    assert "'exported'" not in mine.stdout  # bob's workflow: not alice's to read

    completed = runner.invoke(
        main,
        ["events", "tail", "--from", "0", "--type", "WorkflowCompleted", *url, "--token", AUDITOR],
    )
    assert {line.split()[3] for line in completed.stdout.splitlines()} == {"WorkflowCompleted"}

    target = tmp_path / "log.jsonl"
    export = runner.invoke(main, ["events", "export", "-o", str(target), *url, "--token", AUDITOR])
    assert export.exit_code == 0, export.output
    assert [json.loads(line) for line in target.read_text().splitlines()] == everything
    assert f"--from {everything[-1]['position']}" in export.stderr

    past = runner.invoke(main, ["events", "tail", "--from", "999999", *url, "--token", AUDITOR])
    assert past.exit_code == 1
    assert "position-past-head" in past.stderr
    assert "Traceback" not in past.output


def test_events_tail_follow_prints_new_events_until_interrupted(
    clients: dict[str, ProtoolsClient], stack: LocalStack
) -> None:
    command = [sys.executable, "-m", "metallica", "events", "tail", "--follow"]
    command += ["--url", stack.urls("protools")[0], "--token", AUDITOR]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(process)
    try:
        # Whenever the follower connects, the last 20 positions come first: none is missed.
        workflow = create(clients["alice"], "followed")["workflow_id"]
        seen = output.until("WorkflowCompleted", seconds=30)
        assert any(workflow in line and "WorkflowStarted" in line for line in seen), seen
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, output.rest()
        assert "Traceback" not in output.rest()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        output.rest()  # its reader done, its pipe closed
