"""protools at the edges: attempts never recorded, leases lost and kept, a relay that takes no
more than it can call, a recovery loop that cannot die, outcomes that are never thrown away.

Each test runs on SQLite and PostgreSQL. The workflow service is driven directly where the
point is about what gets committed; the whole app runs in-process, against a real generator
and mailer served over HTTP on loopback, where the point is about the relay.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from metallica.mail_sender.http import create_app as create_mailer
from metallica.mail_sender.settings import MailerSettings
from metallica.password_generator.http import create_app as create_generator
from metallica.password_generator.settings import GeneratorSettings
from metallica.protools import engine, password_workflow, store
from metallica.protools.engine import Retry, Succeeded
from metallica.protools.http import create_app
from metallica.protools.sealing import ProtoolsKeyring
from metallica.protools.service import WorkflowService
from metallica.protools.settings import ProtoolsSettings
from metallica.storage import Database, Timeouts
from tests.asgi_server import AsgiServer
from tests.conftest import MakeUrl
from tests.service.conftest import AUTH, TestClient, headers, migrated, problem_code
from tests.waiting import eventually

TOKEN = "test-token"
CREATE = "/v1/workflows/password-creation"
GENERATE, MAIL = password_workflow.GENERATE, password_workflow.MAIL
GENERATED = {"username": "alice", "password": "pw-from-the-generator"}
EXPIRED = -1.0  # a lease length that is over as soon as it is taken
KEYS = ProtoolsKeyring.generate("k1")  # every replica of a test seals with the same keys


# --- the workflow service, driven directly -------------------------------------------------------


@pytest.fixture
def database(database_url: MakeUrl) -> Iterator[Database]:
    with migrated(database_url("protools"), "protools") as opened:
        yield opened


def replica(
    database: Database,
    name: str,
    *,
    lease: float = 30.0,
    deadline: float = 300.0,
    clock: Callable[[], float] = time.time,
) -> WorkflowService:
    definition = password_workflow.definition(
        deadline_seconds=deadline, retry=engine.RetryPolicy(0.01, 0.05)
    )
    return WorkflowService(
        database, definition, replica_id=name, lease_seconds=lease, keys=KEYS, clock=clock
    )


def lease_of(database: Database, message_id: int) -> store.LeaseState | None:
    with database.transaction() as tx:
        return store.lock_message(tx, message_id)


def test_an_attempt_claimed_and_never_recorded_is_in_doubt_past_the_deadline(
    database: Database,
) -> None:
    # Replica A accepts (attempt 1 is leased to it) and dies mid-call: nothing is recorded, its
    # lease runs out. The deadline passes. Replica B claims attempt 2: the generator may have
    # created the password under attempt 1, so B must ask again, not fail the workflow.
    a = replica(database, "a", lease=EXPIRED, deadline=0)
    accepted = a.accept("k1", {"username": "alice"})
    b = replica(database, "b", deadline=0)
    (message,) = b.claim_due(10)
    assert (message.stream_id, message.attempts) == (accepted.workflow_id, 2)

    assert b.may_attempt(message) is True
    refused = b.record(
        message, Retry("connection-refused", in_doubt=False), replica="g", elapsed_ms=1.0
    )
    assert not refused.finished  # a sure failure now does not clear the doubt of attempt 1
    state = b.load(accepted.workflow_id)
    assert state is not None
    assert state.status == engine.RUNNING
    assert state.in_doubt == {GENERATE}
    last = b.history(accepted.workflow_id)[-1]
    assert (last.type, last.data["in_doubt"], last.data["unrecorded"]) == (
        engine.ATTEMPT_FAILED,
        True,
        [1],
    )


def test_a_replica_that_lost_its_lease_neither_releases_it_nor_loses_its_success(
    database: Database,
) -> None:
    a = replica(database, "a", lease=EXPIRED)
    accepted = a.accept("k1", {"username": "alice"})
    assert accepted.message is not None
    b = replica(database, "b")
    (taken,) = b.claim_due(10)  # A's call outlived its lease; B makes attempt 2
    assert lease_of(database, taken.id) == store.LeaseState("b", 2)

    # A's timeout comes back: it joins the history, and B's lease stays B's.
    late_timeout = a.record(accepted.message, Retry("timeout"), replica="g", elapsed_ms=9.0)
    assert late_timeout.fenced
    assert late_timeout.retry_at is None
    assert lease_of(database, taken.id) == store.LeaseState("b", 2)
    state = a.load(accepted.workflow_id)
    assert state is not None
    assert state.in_doubt == {GENERATE}

    # A's success comes back after all: it is the truth, whoever holds the lease.
    success = a.record(accepted.message, Succeeded(GENERATED), replica="g", elapsed_ms=9.0)
    assert success.fenced
    assert success.message is not None
    assert success.message.step == MAIL  # and the mail is on its way, leased to A
    assert lease_of(database, taken.id) is None

    # B's attempt gets the same password (same key): nothing more to record.
    duplicate = b.record(taken, Succeeded(GENERATED), replica="g", elapsed_ms=3.0)
    assert (duplicate.late, duplicate.message) == (False, None)
    types = [event.type for event in b.history(accepted.workflow_id)]
    assert types == [engine.STARTED, engine.ATTEMPT_FAILED, engine.SUCCEEDED]


def test_leases_are_judged_by_the_databases_clock_not_a_replicas(database: Database) -> None:
    a = replica(database, "a")
    accepted = a.accept("k1", {"username": "alice"})
    assert accepted.message is not None
    # A replica whose clock runs an hour ahead must not think A's 30 s lease is over.
    ahead = replica(database, "ahead", clock=lambda: time.time() + 3600)
    assert ahead.claim_due(10) == []
    assert lease_of(database, accepted.message.id) == store.LeaseState("a", 1)

    # Nor does its clock move the retry it schedules: due in the backoff, by the database.
    recorded = a.record(
        accepted.message, Retry("connection-refused", in_doubt=False), replica="g", elapsed_ms=1
    )
    assert recorded.retry_at is not None
    due_in = ahead.outbox_summary().due_in
    assert due_in is not None
    assert due_in <= 0.05 + 0.5


# --- the whole app, against a real generator and mailer ------------------------------------------


class Stack:
    """protools in-process (a TestClient), the generator and mailer over real HTTP."""

    def __init__(self, urls: MakeUrl, spool: Path, running: ExitStack) -> None:
        self._urls = urls
        self._running = running
        self.generator = running.enter_context(
            AsgiServer(
                create_generator(GeneratorSettings(urls("generator"), TOKEN, faults_enabled=True))
            )
        )
        self.mailer = running.enter_context(
            AsgiServer(create_mailer(MailerSettings(urls("mailer"), TOKEN, spool)))
        )
        self.url = urls("protools")

    def protools(self, **overrides: Any) -> TestClient:
        settings: dict[str, Any] = {
            "generator_urls": (self.generator.url,),
            "mailer_urls": (self.mailer.url,),
            "retry_initial": 0.05,
            "retry_max": 0.2,
            "poll_interval": 0.1,
            "lease_seconds": 5.0,
            "call_timeout": 5.0,
            "replica_id": "protools-1",
        } | overrides
        app = create_app(ProtoolsSettings(self.url, TOKEN, **settings))
        return self._running.enter_context(TestClient(app, raise_server_exceptions=False))

    def arm_generator(self, **fault: Any) -> None:
        response = httpx.post(self.generator.url + "/v1/faults", json=fault, headers=AUTH)
        assert response.status_code == 201, response.text

    def pending(self) -> list[dict[str, Any]]:
        with migrated(self.url, "protools") as database, database.transaction() as tx:
            return store.pending(tx)


@pytest.fixture
def stack(database_url: MakeUrl, tmp_path: Path) -> Iterator[Stack]:
    with ExitStack() as running:
        yield Stack(database_url, tmp_path / "maildir", running)


def start(client: TestClient, username: str, key: str | None = None) -> str:
    response = client.post(
        CREATE, json={"username": username}, headers=headers(key or username, Prefer="wait=0")
    )
    assert response.status_code == 202, response.text
    workflow_id: str = response.json()["workflow_id"]
    return workflow_id


def outcome(client: TestClient, workflow_id: str, wait: float = 20.0) -> dict[str, Any]:
    response = client.get(
        f"/v1/workflows/{workflow_id}", headers={**AUTH, "Prefer": f"wait={wait:g}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def events(client: TestClient, workflow_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/workflows/{workflow_id}/events", headers=AUTH)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def attempts(client: TestClient, workflow_id: str, step: str = GENERATE) -> list[tuple[str, int]]:
    return [
        (event["type"], event["data"]["attempt"])
        for event in events(client, workflow_id)
        if event["type"] in (engine.ATTEMPT_FAILED, engine.SUCCEEDED)
        and event["data"]["step"] == step
    ]


def test_the_relay_claims_no_more_than_it_can_call(stack: Stack) -> None:
    stack.arm_generator(point="before_persist", action="delay", delay_ms=1500, count=100)
    client = stack.protools(relay_concurrency=2)
    workflows = [start(client, f"user{index}") for index in range(6)]

    # While the two slots are busy, the other four calls wait in the outbox, unleased, for any
    # relay with room; none of them sits in this one's queue with its lease running out.
    leased_counts = []
    for _ in range(10):
        leased_counts.append(sum(1 for row in stack.pending() if row["lease_owner"]))
        time.sleep(0.1)
    assert max(leased_counts) <= 2, leased_counts

    for workflow_id in workflows:
        assert outcome(client, workflow_id)["status"] == "completed"
        assert attempts(client, workflow_id) == [(engine.SUCCEEDED, 1)]


def test_a_call_slower_than_its_lease_keeps_its_lease(stack: Stack, database: Database) -> None:
    # The call outlasts three leases; a renewal comes every third of one. The margins are wide
    # (a renewal may run 0.8 s late, the call's timeout is far off) because CI runs this
    # beside other suites on two cores, where a lease of 0.6 s once lapsed between renewals.
    stack.arm_generator(point="before_persist", action="delay", delay_ms=4000)
    client = stack.protools(lease_seconds=1.2, call_timeout=15.0)
    workflow_id = start(client, "alice")

    other = replica(database, "protools-2")  # another replica, looking for expired leases
    observed = time.monotonic() + 3.5
    while time.monotonic() < observed:
        assert other.claim_due(10) == [], "another replica took over a call still in flight"
        time.sleep(0.05)

    assert outcome(client, workflow_id)["status"] == "completed"
    assert attempts(client, workflow_id) == [(engine.SUCCEEDED, 1)]


def test_the_recovery_loop_survives_a_poisoned_message_and_keeps_retrying(
    stack: Stack, database: Database
) -> None:
    poisoned = replica(database, "elsewhere", lease=EXPIRED).accept("poison", {"username": "p"})
    assert poisoned.message is not None
    with database.transaction() as tx:
        tx.run_script(f"UPDATE outbox SET payload = '{{oops' WHERE id = {poisoned.message.id}")
    client = stack.protools(generator_urls=("http://127.0.0.1:9",))  # nothing listens there
    workflow_id = start(client, "alice")

    # Its first attempt was refused; only the recovery loop makes the next ones.
    assert eventually(lambda: len(attempts(client, workflow_id)) >= 3)
    assert client.get("/readyz").status_code == 200


def test_readiness_tells_when_the_recovery_loop_fails_and_when_it_heals(
    stack: Stack, database: Database
) -> None:
    client = stack.protools()
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {
        "database",
        "relay_recovery",
        "relay_lease_renewal",
        "log_tailer",
    }

    with database.transaction() as tx:
        tx.run_script("ALTER TABLE outbox RENAME TO outbox_away")
    try:
        assert eventually(lambda: client.get("/readyz").status_code == 503)
        checks = client.get("/readyz").json()["checks"]
        assert checks["relay_recovery"]["ok"] is False
        assert checks["relay_recovery"]["failures"] >= 1
    finally:
        with database.transaction() as tx:
            tx.run_script("ALTER TABLE outbox_away RENAME TO outbox")
    assert eventually(lambda: client.get("/readyz").status_code == 200)
    assert outcome(client, start(client, "alice"))["status"] == "completed"


def test_a_successful_call_is_recorded_even_when_the_database_is_briefly_locked(
    stack: Stack, backend: str, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    stack.arm_generator(point="before_persist", action="delay", delay_ms=800)
    client = stack.protools(database_timeouts=Timeouts(lock=0.2), lease_seconds=6.0)
    workflow_id = start(client, "alice")

    # While the call is in flight, another session locks the outbox; the record that follows
    # the generator's answer meets the lock, times out, and must retry, not drop the answer.
    release = threading.Event()
    locked = threading.Event()

    def hold_lock() -> None:
        with database.transaction() as tx:
            if backend == "postgres":
                tx.run_script("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            else:
                tx.run_script("UPDATE outbox SET attempts = attempts WHERE 0")  # the write lock
            locked.set()
            release.wait(20)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        assert eventually(lambda: "metallica.record_retried" in caplog.text)
    finally:
        release.set()
        holder.join(20)

    assert outcome(client, workflow_id)["status"] == "completed"
    assert attempts(client, workflow_id) == [(engine.SUCCEEDED, 1)]


def test_a_command_held_by_another_transaction_is_in_progress(
    stack: Stack, backend: str, database: Database
) -> None:
    client = stack.protools(database_timeouts=Timeouts(lock=0.2))
    release, locked = threading.Event(), threading.Event()

    class RollBack(Exception):
        pass

    def hold_key() -> None:
        with contextlib.suppress(RollBack), database.transaction() as tx:
            store.record_command(tx, store.Command("k1", "fp", "wf-elsewhere", time.time()))
            locked.set()
            release.wait(20)
            raise RollBack

    holder = threading.Thread(target=hold_key)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        response = client.post(CREATE, json={"username": "alice"}, headers=headers("k1"))
        elapsed = time.monotonic() - started
    finally:
        release.set()
        holder.join(20)
    assert elapsed < 2.0
    assert response.headers["retry-after"] == "1"
    expected = (409, "command-in-progress") if backend == "postgres" else (503, "storage-busy")
    assert (response.status_code, problem_code(response)) == expected


def test_the_creators_status_is_protools_own(stack: Stack) -> None:
    client = stack.protools()
    first = client.post(CREATE, json={"username": "alice"}, headers=headers("k1"))
    assert first.status_code == 200
    taken = client.post(CREATE, json={"username": "ALICE"}, headers=headers("k2"))
    assert taken.status_code == 409
    assert problem_code(taken) == "username-taken"
    assert "instance" not in taken.json()


def test_a_bad_mail_domain_is_refused_at_start(stack: Stack) -> None:
    with pytest.raises(ValueError, match="not a mail domain"):
        stack.protools(mail_domain="not a domain")


def test_once_its_command_is_forgotten_a_key_sent_again_is_a_new_command(stack: Stack) -> None:
    client = stack.protools()
    first = start(client, "alice", key="alice-key")
    assert outcome(client, first)["status"] == "completed"
    running = start(client, "bob", key="bob-key")  # may still run: kept however old
    service: WorkflowService = client.app.state.service  # type: ignore[attr-defined]

    # Within the retention, the same key is the same workflow.
    replay = client.post(CREATE, json={"username": "alice"}, headers=headers("alice-key"))
    assert replay.json()["workflow_id"] == first
    assert service.expire_commands(retention=3600) == 0
    # Past it (a retention of 0: every ended workflow), the key is forgotten: a new command,
    # whose workflow fails, the username having its password already. The events stay.
    assert outcome(client, running)["status"] == "completed"
    assert service.expire_commands(retention=0) == 2
    again = start(client, "alice", key="alice-key")
    assert again != first
    assert outcome(client, again)["error"]["type"].endswith("/username-taken")
    assert outcome(client, first)["status"] == "completed"
