"""password-generator in-process: the HTTP contract, the command store, concurrency, faults."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.types import ASGIApp

from metallica.errors import UsernameTaken
from metallica.password_generator.domain import PasswordPolicy
from metallica.password_generator.http import create_app
from metallica.password_generator.service import Created, PasswordService
from metallica.password_generator.settings import GeneratorSettings
from metallica.storage import Timeouts, open_database
from tests.conftest import MakeUrl
from tests.service.conftest import AUTH, TestClient, count, headers, migrated, problem_code
from tests.waiting import eventually

PASSWORDS = "/v1/passwords"
MakeClient = Callable[..., TestClient]


@pytest.fixture
def url(database_url: MakeUrl) -> str:
    return database_url("generator")


@pytest.fixture
def make_client(url: str, start_app: Callable[[ASGIApp], TestClient]) -> MakeClient:
    """``make(faults_enabled=False)``: a running app on the test's database."""

    def make(faults_enabled: bool = False) -> TestClient:
        return start_app(
            create_app(GeneratorSettings(url, "test-token", faults_enabled=faults_enabled))
        )

    return make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def passwords(url: str) -> int:
    return count(url, "generator", "count_passwords")


def commands(url: str) -> int:
    return count(url, "generator", "count_commands")


def stored_password(url: str, username: str) -> str | None:
    database = open_database(url, "generator", pool_size=1)
    try:
        row = PasswordService(database, PasswordPolicy()).find(username)
    finally:
        database.close()
    return None if row is None else str(row["password"])


def create(client: TestClient, key: str | None, body: Any) -> Any:
    return client.post(PASSWORDS, json=body, headers=headers(key))


# --- the contract ----------------------------------------------------------------------------


def test_create_answers_201_with_the_password(client: TestClient, url: str) -> None:
    response = create(client, "k1", {"username": "alice"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"username", "password"}
    assert body["username"] == "alice"
    assert isinstance(body["password"], str)
    assert len(body["password"]) == PasswordPolicy().length
    assert stored_password(url, "alice") == body["password"]


def test_a_repeated_key_gets_the_same_answer_and_creates_nothing(
    client: TestClient, url: str
) -> None:
    first = create(client, "k1", {"username": "alice"})
    second = create(client, "k1", {"username": "alice"})
    assert second.status_code == 201
    assert second.json() == first.json()
    assert passwords(url) == 1
    assert commands(url) == 1


def test_another_key_for_a_taken_username_is_a_409(client: TestClient, url: str) -> None:
    created = create(client, "k1", {"username": "alice"}).json()

    for other in ("alice", "ALICE", "Alice"):
        key = f"other-{other}"
        taken = create(client, key, {"username": other})
        assert taken.status_code == 409, other
        assert problem_code(taken) == "username-taken"
        assert "password" not in taken.json()
        assert created["password"] not in taken.text

        again = create(client, key, {"username": other})
        assert again.status_code == 409, other
        assert problem_code(again) == "username-taken"

    assert passwords(url) == 1
    assert stored_password(url, "alice") == created["password"]
    assert create(client, "k1", {"username": "alice"}).json() == created


def test_a_key_reused_with_another_body_is_a_422(client: TestClient, url: str) -> None:
    create(client, "k1", {"username": "alice"})
    reused = create(client, "k1", {"username": "bob"})
    assert reused.status_code == 422
    assert problem_code(reused) == "idempotency-key-reused"
    assert stored_password(url, "bob") is None
    assert passwords(url) == 1


def test_a_missing_idempotency_key_is_a_400(client: TestClient, url: str) -> None:
    response = create(client, None, {"username": "alice"})
    assert response.status_code == 400
    assert problem_code(response) == "idempotency-key-missing"
    assert commands(url) == 0


INVALID_BODIES: list[Any] = [
    {},
    {"username": ""},
    {"username": "-x"},
    {"username": "a b"},
    {"username": "x" * 65},
    {"username": 5},
    {"username": None},
    {"username": "alice", "user": "alice"},  # an unknown field is refused by its name
    {"user": "alice"},
]


def test_a_missing_or_invalid_username_is_a_422_and_stores_nothing(
    client: TestClient, url: str
) -> None:
    for index, body in enumerate(INVALID_BODIES):
        response = create(client, f"k{index}", body)
        assert response.status_code == 422, body
        assert problem_code(response) in {"invalid-username", "invalid-body"}
        assert response.json().get("field") == ("user" if "user" in body else "username")
    assert passwords(url) == 0
    assert commands(url) == 0


BAD_AUTHORIZATIONS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong-token",
    "Bearer test-token-and-more",
    "Basic dGVzdC10b2tlbg==",
    "test-token",
]


def test_a_missing_or_bad_token_is_a_401(client: TestClient, url: str) -> None:
    for authorization in BAD_AUTHORIZATIONS:
        sent = {"Idempotency-Key": "k1"}
        if authorization is not None:
            sent["Authorization"] = authorization
        response = client.post(PASSWORDS, json={"username": "alice"}, headers=sent)
        assert response.status_code == 401, authorization
        assert problem_code(response) == "unauthorized"
    assert commands(url) == 0
    # the scheme is case-insensitive (RFC 9110)
    accepted = client.post(
        PASSWORDS,
        json={"username": "alice"},
        headers={"Idempotency-Key": "k1", "Authorization": "bearer test-token"},
    )
    assert accepted.status_code == 201


def test_a_body_that_is_not_a_json_object_is_a_422(client: TestClient, url: str) -> None:
    for raw in (b"", b"{", b"not json", b"[]", b'"alice"', b"null", b"\xff"):
        response = client.post(
            PASSWORDS, content=raw, headers={**headers("k1"), "Content-Type": "application/json"}
        )
        assert response.status_code == 422, raw
        assert problem_code(response) == "invalid-body"
    assert commands(url) == 0


def test_unknown_routes_and_methods_get_problems(client: TestClient) -> None:
    unknown = client.get("/v1/nothing-here", headers=AUTH)
    assert unknown.status_code == 404
    assert problem_code(unknown) == "not-found"
    wrong_method = client.get(PASSWORDS, headers=AUTH)
    assert wrong_method.status_code == 405
    assert problem_code(wrong_method) == "method-not-allowed"


def test_health_needs_no_token(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


# --- concurrency -----------------------------------------------------------------------------

THREADS = 8


def race(url: str, work: Callable[[PasswordService, int], Created]) -> list[Created | Exception]:
    """Run ``work`` from THREADS threads at once, each with its own service and connections."""
    with migrated(url, "generator"):
        pass
    barrier = threading.Barrier(THREADS)
    results: list[Created | Exception] = [RuntimeError("did not run")] * THREADS

    def run(index: int) -> None:
        database = open_database(url, "generator", pool_size=1)
        try:
            service = PasswordService(database, PasswordPolicy())
            barrier.wait(timeout=10)
            results[index] = work(service, index)
        except Exception as error:
            results[index] = error
        finally:
            database.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_repeats_of_a_key_get_one_password(url: str) -> None:
    results = race(url, lambda service, _: service.create("same-key", "alice"))
    assert all(isinstance(result, Created) for result in results), results
    assert len(set(results)) == 1
    assert passwords(url) == 1
    assert commands(url) == 1
    (created,) = set(results)
    assert isinstance(created, Created)
    assert stored_password(url, "alice") == created.password


def test_concurrent_keys_for_one_username_create_one_password(url: str) -> None:
    results = race(
        url,
        lambda service, index: service.create(f"key-{index}", ("alice", "ALICE")[index % 2]),
    )
    created = [result for result in results if isinstance(result, Created)]
    taken = [result for result in results if isinstance(result, UsernameTaken)]
    assert len(created) == 1, results
    assert len(taken) == THREADS - 1, results
    assert passwords(url) == 1
    assert commands(url) == THREADS
    assert stored_password(url, "alice") == created[0].password


# --- fault points ----------------------------------------------------------------------------


def arm(client: TestClient, point: str, action: str = "error", **extra: int) -> None:
    response = client.post(
        "/v1/faults", json={"point": point, "action": action, **extra}, headers=AUTH
    )
    assert response.status_code == 201, response.text


def test_a_failure_after_persisting_is_healed_by_the_retry(
    make_client: MakeClient, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(faults_enabled=True)
    arm(client, "after_persist")

    failed = create(client, "k1", {"username": "alice"})
    assert failed.status_code == 500
    assert problem_code(failed) == "injected-fault"
    stored = stored_password(url, "alice")
    assert stored is not None  # the answer was lost, the password was not
    assert stored not in failed.text

    retried = create(client, "k1", {"username": "alice"})
    assert retried.status_code == 201
    assert retried.json() == {"username": "alice", "password": stored}
    assert passwords(url) == 1
    assert stored not in caplog.text


@pytest.mark.parametrize("point", ["before_persist", "during_persist"])
def test_a_failure_before_the_commit_stores_nothing_and_the_retry_creates(
    make_client: MakeClient, url: str, point: str
) -> None:
    client = make_client(faults_enabled=True)
    arm(client, point)

    failed = create(client, "k1", {"username": "alice"})
    assert failed.status_code == 500
    assert problem_code(failed) == "injected-fault"
    assert passwords(url) == 0
    assert commands(url) == 0

    retried = create(client, "k1", {"username": "alice"})
    assert retried.status_code == 201
    assert retried.json()["password"] == stored_password(url, "alice")
    assert passwords(url) == 1


def test_an_armed_fault_fires_count_times_only(make_client: MakeClient, url: str) -> None:
    client = make_client(faults_enabled=True)
    arm(client, "before_persist", count=2)
    assert create(client, "k1", {"username": "alice"}).status_code == 500
    assert create(client, "k1", {"username": "alice"}).status_code == 500
    assert create(client, "k1", {"username": "alice"}).status_code == 201


def test_faults_are_validated(make_client: MakeClient) -> None:
    client = make_client(faults_enabled=True)
    bad_point = client.post(
        "/v1/faults", json={"point": "nowhere", "action": "error"}, headers=AUTH
    )
    assert bad_point.status_code == 422
    bad_action = client.post(
        "/v1/faults", json={"point": "after_persist", "action": "explode"}, headers=AUTH
    )
    assert bad_action.status_code == 422
    unauthenticated = client.post("/v1/faults", json={"point": "after_persist", "action": "error"})
    assert unauthenticated.status_code == 401


def test_without_faults_enabled_the_fault_endpoint_is_a_404(client: TestClient, url: str) -> None:
    response = client.post(
        "/v1/faults", json={"point": "after_persist", "action": "error"}, headers=AUTH
    )
    assert response.status_code == 404
    assert problem_code(response) == "not-found"
    assert create(client, "k1", {"username": "alice"}).status_code == 201


# --- a retry meeting its first attempt's open transaction -------------------------------------

ALICE = {"username": "alice"}


def test_a_retry_during_persistence_is_told_to_come_back_instead_of_waiting(
    url: str, backend: str, start_app: Callable[[ASGIApp], TestClient]
) -> None:
    # The first attempt holds its key in an open transaction (a stuck holder); the retry must
    # not pin a connection until it ends: it gets an answer within the lock timeout.
    settings = GeneratorSettings(
        url, "test-token", faults_enabled=True, database_timeouts=Timeouts(lock=0.3)
    )
    first_client, retry_client = start_app(create_app(settings)), start_app(create_app(settings))
    arm(first_client, "during_persist", action="delay", delay_ms=4000)
    first: list[Any] = []
    holder = threading.Thread(target=lambda: first.append(create(first_client, "k1", ALICE)))
    holder.start()
    try:
        assert eventually(lambda: commands_in_flight(url, backend) > 0)
        started = time.monotonic()
        retried = create(retry_client, "k1", ALICE)
        elapsed = time.monotonic() - started
    finally:
        holder.join(timeout=30)

    assert elapsed < 2.0, f"the retry waited {elapsed:.1f} s for the holder"
    assert retried.headers["retry-after"] == "1"
    if backend == "postgres":  # the key's row lock: the command is in progress
        assert retried.status_code == 409
        assert problem_code(retried) == "command-in-progress"
    else:  # SQLite's one write lock: the database is busy
        assert retried.status_code == 503
        assert problem_code(retried) == "storage-busy"
    assert first[0].status_code == 201  # and the holder, once done, created the password
    again = create(retry_client, "k1", ALICE)
    assert again.status_code == 201
    assert again.json() == first[0].json()


def commands_in_flight(url: str, backend: str) -> int:
    """Transactions holding a write lock on the generator's database right now (PostgreSQL:
    sessions inside a transaction; SQLite: whether a writer holds the lock)."""
    if backend == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'idle in transaction'"
            ).fetchone()
        return int(row[0]) if row else 0
    import sqlite3

    from metallica.storage.sqlite import path_from_url

    probe = sqlite3.connect(path_from_url(url), timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return 0
    except sqlite3.OperationalError:
        return 1
    finally:
        probe.close()
