"""password-generator in-process: the HTTP contract, the command store, concurrency, faults."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.types import ASGIApp

from metallica.errors import IdempotencyRecordExpired, KeyReusedWithOtherBody, UsernameTaken
from metallica.fingerprints import fingerprint
from metallica.password_generator.domain import PasswordPolicy
from metallica.password_generator.http import create_app
from metallica.password_generator.sealing import GeneratorKeyring, new_entry
from metallica.password_generator.service import (
    Created,
    PasswordService,
)
from metallica.password_generator.settings import GeneratorSettings
from metallica.protools.sealing import ProtoolsKeyring
from metallica.storage import Timeouts, open_database
from metallica.storage import migrate as migrate_module
from metallica.storage.queries import migration_files
from tests import raw_rows as stored
from tests.conftest import MakeUrl
from tests.service.conftest import AUTH, TestClient, count, headers, migrated, problem_code
from tests.waiting import eventually

PASSWORDS = "/v1/passwords"
MakeClient = Callable[..., TestClient]


@pytest.fixture
def url(database_url: MakeUrl) -> str:
    return database_url("generator")


@pytest.fixture
def keys() -> GeneratorKeyring:
    return GeneratorKeyring.generate("k1")


@pytest.fixture
def make_client(
    url: str, keys: GeneratorKeyring, start_app: Callable[[ASGIApp], TestClient]
) -> MakeClient:
    """``make(faults_enabled=False, **settings)``: a running app on the test's database, with
    the test's keys unless given others."""

    def make(faults_enabled: bool = False, **settings: Any) -> TestClient:
        settings.setdefault("keys", keys)
        return start_app(
            create_app(
                GeneratorSettings(url, "test-token", faults_enabled=faults_enabled, **settings)
            )
        )

    return make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def passwords(url: str) -> int:
    return count(url, "generator", "count_passwords")


def commands(url: str) -> int:
    return count(url, "generator", "count_commands")


def holds(url: str, keys: GeneratorKeyring, username: str, password: str) -> bool:
    """Whether the generator's stored digest for ``username`` is that of ``password``."""
    database = open_database(url, "generator", pool_size=1)
    try:
        return PasswordService(database, PasswordPolicy(), keys).verify(username, password)
    finally:
        database.close()


def has_password(url: str, username: str) -> bool:
    database = open_database(url, "generator", pool_size=1)
    try:
        return (
            PasswordService(database, PasswordPolicy(), GeneratorKeyring.generate()).find(username)
            is not None
        )
    finally:
        database.close()


def create(client: TestClient, key: str | None, body: Any) -> Any:
    return client.post(PASSWORDS, json=body, headers=headers(key))


# --- the contract ----------------------------------------------------------------------------


def test_create_answers_201_with_the_password(
    client: TestClient, url: str, keys: GeneratorKeyring
) -> None:
    response = create(client, "k1", {"username": "alice"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"username", "password"}
    assert body["username"] == "alice"
    assert isinstance(body["password"], str)
    assert len(body["password"]) == PasswordPolicy().length
    assert holds(url, keys, "alice", body["password"])
    assert not holds(url, keys, "alice", body["password"][::-1])


def test_a_repeated_key_gets_the_same_answer_and_creates_nothing(
    client: TestClient, url: str
) -> None:
    first = create(client, "k1", {"username": "alice"})
    second = create(client, "k1", {"username": "alice"})
    assert second.status_code == 201
    assert second.json() == first.json()
    assert passwords(url) == 1
    assert commands(url) == 1


def test_another_key_for_a_taken_username_is_a_409(
    client: TestClient, url: str, keys: GeneratorKeyring
) -> None:
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
    assert holds(url, keys, "alice", created["password"])
    assert create(client, "k1", {"username": "alice"}).json() == created


def test_a_key_reused_with_another_body_is_a_422(client: TestClient, url: str) -> None:
    create(client, "k1", {"username": "alice"})
    reused = create(client, "k1", {"username": "bob"})
    assert reused.status_code == 422
    assert problem_code(reused) == "idempotency-key-reused"
    assert not has_password(url, "bob")
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


RACE_KEYS = GeneratorKeyring.generate("race")


def race(url: str, work: Callable[[PasswordService, int], Created]) -> list[Created | Exception]:
    """Run ``work`` from THREADS threads at once, each with its own service and connections."""
    with migrated(url, "generator"):
        pass
    barrier = threading.Barrier(THREADS)
    results: list[Created | Exception] = [RuntimeError("did not run")] * THREADS

    def run(index: int) -> None:
        database = open_database(url, "generator", pool_size=1)
        try:
            service = PasswordService(database, PasswordPolicy(), RACE_KEYS)
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
    assert holds(url, RACE_KEYS, "alice", created.password)


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
    assert holds(url, RACE_KEYS, "alice", created[0].password)


# --- fault points ----------------------------------------------------------------------------


def arm(client: TestClient, point: str, action: str = "error", **extra: int) -> None:
    response = client.post(
        "/v1/faults", json={"point": point, "action": action, **extra}, headers=AUTH
    )
    assert response.status_code == 201, response.text


def test_a_failure_after_persisting_is_healed_by_the_retry(
    make_client: MakeClient, url: str, keys: GeneratorKeyring, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(faults_enabled=True)
    arm(client, "after_persist")

    failed = create(client, "k1", {"username": "alice"})
    assert failed.status_code == 500
    assert problem_code(failed) == "injected-fault"
    assert has_password(url, "alice")  # the answer was lost, the password was not

    retried = create(client, "k1", {"username": "alice"})
    assert retried.status_code == 201
    password = retried.json()["password"]
    assert retried.json() == {"username": "alice", "password": password}
    assert holds(url, keys, "alice", password)
    assert password not in failed.text
    assert passwords(url) == 1
    assert password not in caplog.text


@pytest.mark.parametrize("point", ["before_persist", "during_persist"])
def test_a_failure_before_the_commit_stores_nothing_and_the_retry_creates(
    make_client: MakeClient, url: str, keys: GeneratorKeyring, point: str
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
    assert holds(url, keys, "alice", retried.json()["password"])
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


# --- secrets at rest ---------------------------------------------------------------------------


def raw_rows(url: str, backend: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the generator's two tables, read with the driver, every column."""
    return stored.raw_rows(url, stored.TABLES["generator"])


def assert_nowhere(password: str, url: str, backend: str, *, files: bool = True) -> None:
    stored.assert_nowhere(password, url, stored.TABLES["generator"], files=files)


def test_the_database_holds_no_clear_password(
    client: TestClient, url: str, backend: str, keys: GeneratorKeyring
) -> None:
    created = create(client, "k1", {"username": "alice"}).json()
    assert create(client, "k1", {"username": "alice"}).json() == created
    assert create(client, "k2", {"username": "ALICE"}).status_code == 409
    password = created["password"]

    assert_nowhere(password, url, backend)
    rows = raw_rows(url, backend)
    (stored,) = rows["passwords"]
    assert stored["digest_key_id"] == "k1"
    assert len(bytes(stored["digest"])) == 32
    assert stored["legacy_password"] is None
    commands = {row["idempotency_key"]: row for row in rows["commands"]}
    assert commands["k1"]["seal_key_id"] == "k1"
    assert len(bytes(commands["k1"]["sealed"])) == 12 + len(password) + 16
    assert commands["k2"]["sealed"] is None  # a refusal keeps no password
    assert commands["k2"]["seal_key_id"] is None


def test_a_replay_is_told_the_record_expired_once_its_retention_is_over(url: str) -> None:
    # The exact rule, on a clock of our own: the copy is kept for `retention` seconds after
    # the record was created; a replay past that is refused even before the sweep has run.
    now = [1_000.0]
    keys = GeneratorKeyring.generate()
    with migrated(url, "generator") as database:
        service = PasswordService(
            database, PasswordPolicy(), keys, retention=100, clock=lambda: now[0]
        )
        created = service.create("k-alice", "alice")
        now[0] = 1_099.9
        assert service.create("k-alice", "alice") == created
        now[0] = 1_100.0
        with pytest.raises(IdempotencyRecordExpired) as expired:
            service.create("k-alice", "alice")
        assert expired.value.status == 410
        assert created.password not in str(expired.value.detail)
        for number in range(5):
            service.create(f"k-{number}", f"user{number}")
        now[0] = 1_150.0
        fresh = service.create("k-fresh", "fresh")

        now[0] = 1_200.5  # the five are past their retention, "fresh" is not
        assert service.expire_sealed_copies(batch=2) == 6  # in batches of 2: alice's too
        assert service.expire_sealed_copies(batch=2) == 0
        assert service.create("k-fresh", "fresh") == fresh
        with pytest.raises(IdempotencyRecordExpired):
            service.create("k-3", "user3")
        # the record stays: the same key with another body, or another key, is still refused
        with pytest.raises(KeyReusedWithOtherBody):
            service.create("k-alice", "bob")
        with pytest.raises(UsernameTaken):
            service.create("k-other", "alice")
        assert service.verify("alice", created.password)  # the digest is for good
    sealed = [row["idempotency_key"] for row in raw_rows_anywhere(url) if row["sealed"]]
    assert sealed == ["k-fresh"]


def raw_rows_anywhere(url: str) -> list[dict[str, Any]]:
    return raw_rows(url, "postgres" if url.startswith("postgres") else "sqlite")["commands"]


def test_the_sweep_drops_expired_copies_and_a_replay_gets_410(
    make_client: MakeClient, url: str, backend: str
) -> None:
    client = make_client(retention=1.0, sweep_interval=0.05)
    created = create(client, "k1", {"username": "alice"})
    assert created.status_code == 201

    assert eventually(lambda: raw_rows(url, backend)["commands"][0]["sealed"] is None)
    replay = create(client, "k1", {"username": "alice"})
    assert replay.status_code == 410
    assert problem_code(replay) == "idempotency-record-expired"
    assert replay.json()["retention_seconds"] == 1
    assert created.json()["password"] not in replay.text
    taken = create(client, "k2", {"username": "alice"})
    assert taken.status_code == 409
    assert problem_code(taken) == "username-taken"


def test_a_generator_with_a_new_key_still_answers_replays_sealed_with_the_old_one(
    make_client: MakeClient, url: str, backend: str
) -> None:
    first, second = new_entry("k1"), new_entry("k2")
    before = make_client(keys=GeneratorKeyring.parse(first))
    alice = create(before, "k-alice", {"username": "alice"}).json()

    rotated_keys = GeneratorKeyring.parse(f"{second},{first}")
    after = make_client(keys=rotated_keys)
    assert create(after, "k-alice", {"username": "alice"}).json() == alice
    bob = create(after, "k-bob", {"username": "bob"}).json()
    rows = raw_rows(url, backend)
    assert {r["username_key"]: r["digest_key_id"] for r in rows["passwords"]} == {
        "alice": "k1",
        "bob": "k2",
    }
    assert {r["idempotency_key"]: r["seal_key_id"] for r in rows["commands"]} == {
        "k-alice": "k1",
        "k-bob": "k2",
    }
    assert holds(url, rotated_keys, "alice", alice["password"])
    assert holds(url, rotated_keys, "bob", bob["password"])

    # A replica still without the new key cannot read bob's copy: a 500 to retry, no secret.
    stale = create(before, "k-bob", {"username": "bob"})
    assert stale.status_code == 500
    assert problem_code(stale) == "replay-unreadable"
    assert bob["password"] not in stale.text
    for entry in (first, second):
        assert entry.split(":")[1][:12] not in stale.text


def test_rows_from_before_the_digests_are_sealed_at_start(
    make_client: MakeClient, url: str, backend: str, keys: GeneratorKeyring
) -> None:
    now = time.time()
    clear = {"old": "Clear-Passw0rd-old!", "ancient": "Clear-Passw0rd-ancient!"}
    database = open_database(url, "generator", pool_size=1)
    try:  # a database at version 1, with what version 1 stored: passwords in clear
        with database.transaction() as tx:
            tx.lock_migrations()
            tx.run_script(migrate_module._CREATE_TABLE)
            version, name, sql = migration_files(database.dialect, "generator")[0]
            tx.run_script(sql)
            tx.execute("record_migration", version=version, name=name)
            for username, created_at in (("old", now - 60), ("ancient", now - 3 * 86400)):
                response = json.dumps({"username": username.title()})
                tx.run_script(
                    "INSERT INTO passwords (username_key, username, password, created_at) "
                    f"VALUES ('{username}', '{username.title()}', '{clear[username]}', "
                    f"{created_at})"
                )
                tx.run_script(
                    "INSERT INTO commands (idempotency_key, fingerprint, username_key, status, "
                    f"response, created_at) VALUES ('k-{username}', "
                    f"'{fingerprint({'username': username.title()})}', '{username}', 201, "
                    f"'{response}', {created_at})"
                )
    finally:
        database.close()

    client = make_client()
    for password in clear.values():
        # Rows only: the old clear text may linger in free pages and the WAL until reused
        # (the generator says so in its log: VACUUM scrubs it).
        assert_nowhere(password, url, backend, files=False)
    assert holds(url, keys, "old", clear["old"])
    assert holds(url, keys, "ancient", clear["ancient"])
    replay = create(client, "k-old", {"username": "Old"})
    assert replay.status_code == 201
    assert replay.json() == {"username": "Old", "password": clear["old"]}
    expired = create(client, "k-ancient", {"username": "Ancient"})
    assert expired.status_code == 410
    assert problem_code(expired) == "idempotency-record-expired"
    assert all(row["legacy_password"] is None for row in raw_rows(url, backend)["passwords"])


def test_the_bench_preload_writes_digests_and_sealed_copies(
    database_url: MakeUrl, backend: str, keys: GeneratorKeyring
) -> None:
    from metallica.bench.preload import preload

    urls = {service: database_url(service) for service in ("protools", "generator", "mailer")}
    for service, service_url in urls.items():
        with migrated(service_url, service):
            pass
    preload(
        urls,
        30,
        lambda _: None,
        generator_keys=keys,
        protools_keys=ProtoolsKeyring.generate("k1"),
    )

    rows = raw_rows(urls["generator"], backend)
    assert len(rows["passwords"]) == len(rows["commands"]) == 30
    username = rows["passwords"][7]["username"]
    number = int(username.rsplit("-", 1)[1])
    password = f"preloaded-{number:08d}-Aa1!"
    assert_nowhere(password, urls["generator"], backend)
    stored.assert_nowhere(password, urls["protools"], stored.TABLES["protools"])
    assert holds(urls["generator"], keys, username, password)
    (command,) = [r for r in rows["commands"] if r["username_key"] == username.lower()]
    with migrated(urls["generator"], "generator") as database:
        replayed = PasswordService(database, PasswordPolicy(), keys).create(
            command["idempotency_key"], username
        )
    assert replayed == Created(username, password)
