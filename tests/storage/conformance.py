"""The storage conformance suite: what every backend must do, written once.

Like eventsourcing's persistence test cases, the suite is a set of abstract classes that know
nothing of SQLite or PostgreSQL: they receive a :class:`DatabaseFactory` (the ``make_db``
fixture) and work through :func:`metallica.storage.open_database`, the migrator and
:mod:`metallica.protools.store`. ``test_conformance.py`` binds them to every backend.

Event and command times passed as ``now`` are made up on purpose. Outbox times come from the
database's clock and the stores take durations: a message due in -5 s is overdue, a lease of
-1 s has already run out, so expiry and due times are tested without sleeping.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from metallica.errors import GroupExists, NotLeased, PositionPastHead, UnknownGroup
from metallica.protools import board, engine, group_store, projection, store
from metallica.protools.groups import GroupSettings, Pending
from metallica.protools.subscriptions import Delivery, Subscriptions
from metallica.storage import (
    Database,
    DatabaseClosed,
    SchemaTooNew,
    SchemaTooOld,
    StillInUse,
    StorageBusy,
    StorageError,
    StorageUnavailable,
    Timeouts,
    Transaction,
    UniqueViolation,
    open_database,
)
from metallica.storage.group_commit import GroupCommit
from metallica.storage.migrate import (
    check_at_start,
    current_version,
    latest_version,
    migrate,
    verify,
)
from metallica.storage.queries import migration_files
from tests.waiting import eventually

T = TypeVar("T")

SCHEMAS = ("protools", "generator", "mailer")
THREAD_TIMEOUT = 60.0
NOW = 1_700_000_000.25

# One read-only query per schema that only works once its tables exist.
SMOKE_QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "protools": ("read_stream", {"stream_id": "nothing"}),
    "generator": ("get_password", {"username_key": "nobody"}),
    "mailer": ("get_mail", {"idempotency_key": "nothing"}),
}


class DatabaseFactory:
    """``make_db``: opens databases on the test's backend, closes them when the test ends."""

    def __init__(self, backend: str, make_url: Callable[[str], str]) -> None:
        self.backend = backend
        self._make_url = make_url
        self._opened: list[Database] = []

    def url(self, name: str = "db") -> str:
        """The URL of database ``name`` (created empty on first use)."""
        return self._make_url(name)

    def __call__(
        self,
        name: str = "db",
        schema: str = "protools",
        *,
        pool_size: int = 8,
        migrated: bool = True,
    ) -> Database:
        """Open database ``name`` for ``schema``, migrated to the latest version by default."""
        return self.open_url(self.url(name), schema, pool_size=pool_size, migrated=migrated)

    def open_url(
        self,
        url: str,
        schema: str,
        *,
        pool_size: int = 8,
        migrated: bool = True,
        timeouts: Timeouts | None = None,
    ) -> Database:
        """Open any URL (closed with the others when the test ends)."""
        database = open_database(url, schema, pool_size=pool_size, timeouts=timeouts)
        self._opened.append(database)
        if migrated:
            migrate(database)
        return database

    def close_all(self) -> None:
        while self._opened:
            self._opened.pop().close()


def run_concurrently(worker: Callable[[int], T], count: int) -> list[T]:
    """Run ``worker(0)`` .. ``worker(count - 1)`` in threads released together; their results.

    The first failure is re-raised, after every thread has finished.
    """
    barrier = threading.Barrier(count)

    def start(index: int) -> T:
        barrier.wait(timeout=THREAD_TIMEOUT)
        return worker(index)

    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="conformance") as pool:
        futures = [pool.submit(start, index) for index in range(count)]
        return [future.result(timeout=THREAD_TIMEOUT) for future in futures]


def backoff(attempt: int) -> None:
    """Sleep a little, longer after each failed attempt (jittered, at most ~20 ms)."""
    time.sleep(random.uniform(0, 0.002 * min(attempt, 10)))


def applied_versions(database: Database) -> list[int]:
    with database.transaction(write=False) as tx:
        return [int(row["version"]) for row in tx.fetch_all("applied_migrations")]


def shipped_versions(database: Database) -> list[int]:
    return [version for version, _, _ in migration_files(database.dialect, database.schema)]


def append_projected(
    tx: Transaction, stream_id: str, expected: int, events: list[engine.NewEvent], *, now: float
) -> None:
    """Append ``events`` and keep the workflows read model, as the service's use cases do."""
    store.append(tx, stream_id, expected, events, now=now)
    projection.project(tx, stream_id, events, now=now)


def event(type_: str, **data: Any) -> engine.NewEvent:
    return engine.NewEvent(type=type_, data=data)


def enqueue(
    tx: Transaction,
    stream_id: str,
    *,
    step: str = "send",
    delay: float = 0.0,
    lease: store.Lease | None = None,
    destination: str = "mailer",
) -> int:
    return store.enqueue(
        tx,
        stream_id=stream_id,
        step=step,
        destination=destination,
        payload={"stream": stream_id, "step": step},
        delay=delay,
        lease=lease,
    ).id


LIVE, EXPIRED = 600.0, -1.0  # lease lengths: one that holds for the test, one already over


def lease(owner: str, seconds: float = LIVE) -> store.Lease:
    return store.Lease(owner, seconds)


def pending_by_id(database: Database) -> dict[int, dict[str, Any]]:
    with database.transaction(write=False) as tx:
        return {int(row["id"]): row for row in store.pending(tx)}


# --- migrations ----------------------------------------------------------------------------------


class MigrationsConformance:
    """Empty to latest, idempotent, verified, safe when replicas migrate together."""

    @pytest.mark.parametrize("schema", SCHEMAS)
    def test_migrate_takes_an_empty_database_to_the_latest_version(
        self, make_db: DatabaseFactory, schema: str
    ) -> None:
        database = make_db(schema=schema, migrated=False)
        shipped = shipped_versions(database)
        assert shipped, f"no migrations shipped for {schema}"

        assert migrate(database) == shipped
        assert applied_versions(database) == shipped
        assert max(shipped) == latest_version(database)
        query, params = SMOKE_QUERIES[schema]
        with database.transaction(write=False) as tx:
            assert tx.fetch_all(query, **params) == []

    @pytest.mark.parametrize("schema", SCHEMAS)
    def test_a_second_migrate_applies_nothing(self, make_db: DatabaseFactory, schema: str) -> None:
        database = make_db(schema=schema, migrated=False)
        migrate(database)

        assert migrate(database) == []
        # Another process (another pool) finds nothing to do either.
        assert migrate(make_db(schema=schema, migrated=False)) == []
        assert applied_versions(database) == shipped_versions(database)

    @pytest.mark.parametrize("schema", SCHEMAS)
    def test_verify_refuses_an_unmigrated_database_and_accepts_a_migrated_one(
        self, make_db: DatabaseFactory, schema: str
    ) -> None:
        database = make_db(schema=schema, migrated=False)
        with pytest.raises(SchemaTooOld, match=schema):
            verify(database)

        migrate(database)

        verify(database)

    @pytest.mark.parametrize("schema", SCHEMAS)
    def test_a_service_starts_only_on_the_schema_version_it_knows(
        self, make_db: DatabaseFactory, schema: str
    ) -> None:
        database = make_db(schema=schema, migrated=False)
        # Told not to migrate (the deployment runs `metallica migrate`), it refuses an old one.
        with pytest.raises(SchemaTooOld, match=f"metallica migrate {schema}"):
            check_at_start(database, migrate_at_start=False)
        assert current_version(database) == 0  # and it changed nothing
        # By default it migrates, then finds nothing to do, and starts.
        assert check_at_start(database, migrate_at_start=True) == shipped_versions(database)
        assert check_at_start(database, migrate_at_start=False) == []
        # A schema newer than the code (a rollback over a migration) is refused either way.
        newer = latest_version(database) + 1
        with database.transaction() as tx:
            tx.execute("record_migration", version=newer, name=f"{newer:04d}_from_the_future")
        for migrate_at_start in (True, False):
            with pytest.raises(SchemaTooNew, match=f"version {newer}"):
                check_at_start(database, migrate_at_start=migrate_at_start)

    @pytest.mark.parametrize("schema", SCHEMAS)
    def test_concurrent_migrators_apply_each_migration_exactly_once(
        self, make_db: DatabaseFactory, schema: str
    ) -> None:
        url = make_db.url("shared")

        def migrator(_: int) -> list[int]:
            database = open_database(url, schema, pool_size=1)
            try:
                return migrate(database)
            finally:
                database.close()

        applied = run_concurrently(migrator, 10)

        database = make_db("shared", schema=schema, migrated=False)
        shipped = shipped_versions(database)
        assert sorted(version for versions in applied for version in versions) == shipped
        assert applied_versions(database) == shipped
        verify(database)


# --- event store ---------------------------------------------------------------------------------


class EventStoreConformance:
    """Append-only streams with optimistic versions, and one global log."""

    def test_appended_events_read_back_in_order_with_their_data(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        data = {
            "text": 'héllo ✓ "quoted" \\ back',
            "int": 2**53,
            "float": 0.1,
            "flag": True,
            "nothing": None,
            "nested": {"list": [1, "two", None, {"three": 3.5}], "empty": {}},
        }
        with database.transaction() as tx:
            first = store.append(
                tx, "wf-1", 0, [event("Started", **data), event("Called")], now=NOW
            )
            other = store.append(tx, "wf-2", 0, [event("Started", n=2)], now=NOW + 1)
        with database.transaction() as tx:
            later = store.append(tx, "wf-1", 2, [event("Answered", status=201)], now=NOW + 2)

        with database.transaction(write=False) as tx:
            stream = store.read_stream(tx, "wf-1")
            missing = store.read_stream(tx, "never-written")

        assert [(e.version, e.type) for e in stream] == [
            (1, "Started"),
            (2, "Called"),
            (3, "Answered"),
        ]
        assert {e.stream_id for e in stream} == {"wf-1"}
        assert stream[0].data == data
        assert stream[1].data == {}
        assert stream[2].data == {"status": 201}
        assert [e.recorded_at for e in stream] == [NOW, NOW, NOW + 2]
        assert [e.global_position for e in stream] == first + later
        assert first[0] < first[1] < other[0] < later[0]
        assert missing == []

    def test_append_at_a_taken_version_conflicts_and_rolls_back_the_whole_transaction(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            store.append(tx, "wf-1", 0, [event("Started"), event("Called")], now=NOW)

        def conflicting() -> None:
            with database.transaction() as tx:
                # Everything this transaction did before the conflict must vanish with it.
                store.append(tx, "wf-2", 0, [event("Started")], now=NOW)
                enqueue(tx, "wf-2")
                store.record_command(tx, store.Command("key-2", "fp", "wf-2", NOW))
                store.append(tx, "wf-1", 1, [event("Late"), event("Later")], now=NOW)

        with pytest.raises(store.VersionConflict) as conflict:
            conflicting()

        assert (conflict.value.stream_id, conflict.value.version) == ("wf-1", 2)
        with database.transaction(write=False) as tx:
            assert [e.type for e in store.read_stream(tx, "wf-1")] == ["Started", "Called"]
            assert store.read_stream(tx, "wf-2") == []
            assert store.pending(tx) == []
            assert store.find_command(tx, "key-2") is None
            assert len(store.read_all(tx)) == 2

    def test_concurrent_writers_on_one_stream_leave_no_gap_and_no_duplicate(
        self, make_db: DatabaseFactory
    ) -> None:
        writers, appends = 10, 20
        replicas = [make_db(pool_size=5), make_db(pool_size=5, migrated=False)]

        def writer(index: int) -> None:
            database = replicas[index % len(replicas)]
            for n in range(appends):
                for attempt in range(1, 1000):
                    try:
                        with database.transaction() as tx:
                            version = len(store.read_stream(tx, "hot"))
                            store.append(
                                tx, "hot", version, [event("Wrote", writer=index, n=n)], now=NOW
                            )
                        break
                    except (store.VersionConflict, StorageBusy):
                        backoff(attempt)
                else:
                    raise AssertionError(f"writer {index} never appended its event {n}")

        run_concurrently(writer, writers)

        with replicas[0].transaction(write=False) as tx:
            stream = store.read_stream(tx, "hot")
            log = store.read_all(tx)
        total = writers * appends
        assert [e.version for e in stream] == list(range(1, total + 1))
        written = [(e.data["writer"], e.data["n"]) for e in stream]
        assert sorted(written) == [(w, n) for w in range(writers) for n in range(appends)]
        for index in range(writers):  # each writer's own events keep their order
            assert [n for w, n in written if w == index] == list(range(appends))
        positions = [e.global_position for e in log]
        assert positions == sorted(set(positions))
        assert [(e.stream_id, e.version) for e in log] == [("hot", v) for v in range(1, total + 1)]

    def test_an_event_keeps_its_schema_version_and_reads_in_the_current_shape(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            store.append(tx, "new", 0, [event("WorkflowStarted", queued_ms=4.0)], now=NOW)
            # A start written before queued_ms existed: schema version 1, no such field.
            tx.execute(
                "append_events",
                stream_id="old",
                first_version=1,
                events=json.dumps([["WorkflowStarted", '{"input": {"username": "ann"}}', 1]]),
                recorded_at=NOW,
            )
        with database.transaction(write=False) as tx:
            versions = {
                row["stream_id"]: row["schema_version"]
                for row in tx.fetch_all("read_all", after=0, limit=10)
            }
            assert versions == {"new": 2, "old": 1}
            (old,) = store.read_stream(tx, "old")
            assert old.data == {"input": {"username": "ann"}, "queued_ms": 0.0}
            assert store.read_stream(tx, "new")[0].data == {"queued_ms": 4.0}
            logged = store.read_log(tx, after=0, limit=10)
            assert [e.event.data.get("queued_ms") for e in logged] == [4.0, 0.0]

    def test_read_all_pages_through_the_global_log_in_order(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        for round_ in range(5):
            with database.transaction() as tx:
                for stream in ("a", "b", "c"):
                    store.append(tx, stream, round_, [event("E", round=round_)], now=NOW)

        seen: list[engine.RecordedEvent] = []
        with database.transaction(write=False) as tx:
            whole = store.read_all(tx)
            after = 0
            while page := store.read_all(tx, after=after, limit=4):
                assert len(page) <= 4
                seen.extend(page)
                after = page[-1].global_position

        assert seen == whole
        assert len(whole) == 15
        assert [e.global_position for e in whole] == sorted({e.global_position for e in whole})
        assert [(e.stream_id, e.version) for e in whole] == [
            (stream, round_ + 1) for round_ in range(5) for stream in ("a", "b", "c")
        ]

    def test_list_streams_gives_the_newest_streams_first(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        for index in range(3):
            with database.transaction() as tx:
                store.append(
                    tx,
                    f"wf-{index}",
                    0,
                    [event("Started", n=index), event("More")],
                    now=NOW + index,
                )

        with database.transaction(write=False) as tx:
            streams = store.list_streams(tx, limit=2)

        assert streams == [("wf-2", {"n": 2}, NOW + 2), ("wf-1", {"n": 1}, NOW + 1)]

    def test_list_workflows_gives_a_clients_own_newest_first_by_status_in_pages(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        ends = {0: engine.COMPLETED, 1: None, 2: engine.FAILED, 3: engine.COMPLETED, 4: None}
        for index, end in ends.items():
            started = engine.NewEvent(
                engine.STARTED,
                {"workflow": "w", "input": {"username": f"u{index}"}, "client": "alice"},
            )
            others = engine.NewEvent(
                engine.STARTED, {"workflow": "w", "input": {"username": "x"}, "client": "bob"}
            )
            with database.transaction() as tx:  # appended and projected, as a use case does
                append_projected(tx, f"wf-{index}", 0, [started], now=NOW + index)
                append_projected(tx, f"bob-{index}", 0, [others], now=NOW + index)
                if end is not None:
                    append_projected(tx, f"wf-{index}", 1, [event("Step"), event(end)], now=NOW)

        def listed(**options: Any) -> list[tuple[str, str]]:
            with database.transaction(write=False) as tx:
                found = store.list_workflows(tx, "alice", **options)
            return [(summary.workflow_id, summary.status) for summary in found]

        assert listed() == [
            ("wf-4", "running"),
            ("wf-3", "completed"),
            ("wf-2", "failed"),
            ("wf-1", "running"),
            ("wf-0", "completed"),
        ]
        assert listed(status="running") == [("wf-4", "running"), ("wf-1", "running")]
        assert listed(status="completed", limit=1) == [("wf-3", "completed")]
        with database.transaction(write=False) as tx:
            first = store.list_workflows(tx, "alice", limit=2)
            second = store.list_workflows(tx, "alice", limit=2, before=first[-1].position)
        assert [s.workflow_id for s in first + second] == ["wf-4", "wf-3", "wf-2", "wf-1"]
        assert first[0].input == {"username": "u4"}
        assert first[0].started_at == NOW + 4
        with database.transaction(write=False) as tx:
            assert store.list_workflows(tx, "carol") == []

    def test_the_read_model_rebuilt_from_the_events_is_the_one_its_projector_kept(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            for index, end in enumerate((engine.COMPLETED, None, engine.FAILED)):
                started = engine.NewEvent(
                    engine.STARTED, {"input": {"username": f"u{index}"}, "client": "ann"}
                )
                append_projected(tx, f"wf-{index}", 0, [started], now=NOW + index)
                if end is not None:
                    append_projected(tx, f"wf-{index}", 1, [event(end)], now=NOW)
            # A workflow started before clients had names: in the model, listed for nobody.
            append_projected(tx, "old", 0, [engine.NewEvent(engine.STARTED, {})], now=NOW)
        with database.transaction() as tx:
            found, _ = projection.compare(tx)
        assert (found.rows, found.identical) == (4, True)

        with database.transaction() as tx:  # the model drifts: a row lost, one wrong, one extra
            tx.run_script("DELETE FROM workflows WHERE workflow_id = 'wf-0'")
            tx.run_script("UPDATE workflows SET status = 'running' WHERE workflow_id = 'wf-2'")
            tx.run_script("INSERT INTO workflows VALUES ('ghost', 'ann', 'running', '{}', 1, 999)")
        with database.transaction() as tx:
            rebuilt = projection.rebuild(tx)
        assert (rebuilt.missing, rebuilt.changed, rebuilt.extra) == (["wf-0"], ["wf-2"], ["ghost"])
        with database.transaction() as tx:
            assert projection.compare(tx)[0].identical
            listed = store.list_workflows(tx, "ann")
        assert [(s.workflow_id, s.status, s.input) for s in listed] == [
            ("wf-2", "failed", {"username": "u2"}),
            ("wf-1", "running", {"username": "u1"}),
            ("wf-0", "completed", {"username": "u0"}),
        ]


# --- outbox --------------------------------------------------------------------------------------


class LogConformance:
    """The global log as its followers read it: positions visible in commit order, so a
    reader that moved past P never sees, later, an event at or below P."""

    WRITERS, TRANSACTIONS = 4, 40

    def test_a_reader_moving_past_what_it_saw_misses_nothing_concurrent_writers_commit(
        self, make_db: DatabaseFactory
    ) -> None:
        # Each writer is a database of its own (a replica: its own pool) and holds its
        # transaction open a moment after the append, as a use case does before it commits:
        # without the log's turn, a writer that drew position 7 commits after one that drew 8,
        # and a reader that saw 8 never sees 7.
        url = make_db.url()
        writers = [make_db.open_url(url, "protools") for _ in range(self.WRITERS)]
        reader_db = make_db.open_url(url, "protools")
        done = threading.Event()
        seen: list[int] = []

        def follow() -> None:
            after = 0
            while True:
                finished = done.is_set()  # read before the log: nothing committed after is due
                with reader_db.transaction(write=False) as tx:
                    found = store.read_log(tx, after=after, limit=50)
                seen.extend(logged.event.global_position for logged in found)
                after = seen[-1] if seen else after
                if finished and not found:
                    return

        def write(index: int) -> None:
            rng = random.Random(index)
            for n in range(self.TRANSACTIONS):
                with writers[index].transaction() as tx:
                    events = [event("Started", n=n), event("Called")][: rng.randint(1, 2)]
                    store.append(tx, f"wf-{index}-{n}", 0, events, now=NOW)
                    time.sleep(rng.uniform(0, 0.004))

        reader = threading.Thread(target=follow, name="log-reader")
        reader.start()
        try:
            run_concurrently(write, self.WRITERS)
        finally:
            done.set()
            reader.join(THREAD_TIMEOUT)
        assert not reader.is_alive()
        with reader_db.transaction(write=False) as tx:
            stored = [e.event.global_position for e in store.read_log(tx, after=0, limit=10**4)]
            head = store.log_head(tx)
        assert len(stored) >= self.WRITERS * self.TRANSACTIONS
        assert head == stored[-1]
        missed = sorted(set(stored) - set(seen))
        assert not missed, f"the reader moved past {len(missed)} events: {missed[:10]}"
        assert seen == stored, "every event once, in position order"

    def test_the_log_reads_after_up_to_and_filtered(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        with database.transaction() as tx:
            assert store.log_head(tx) == 0
            a = store.append(tx, "wf-a", 0, [event("Started"), event("Called")], now=NOW)
            b = store.append(tx, "wf-b", 0, [event("Started")], now=NOW)
        with database.transaction(write=False) as tx:
            head = store.log_head(tx)
            everything = store.read_log(tx, after=0, limit=10)
            middle = store.read_log(tx, after=a[0], until=a[1], limit=10)
            started = store.read_log(tx, after=0, limit=10, types=["Started"])
            one = store.read_log(tx, after=0, limit=10, stream_id="wf-a")
            first = store.read_log(tx, after=0, limit=1)
        assert head == b[0]
        assert [e.event.global_position for e in everything] == [*a, *b]
        assert [e.event.global_position for e in middle] == [a[1]]
        assert [e.event.stream_id for e in started] == ["wf-a", "wf-b"]
        assert [e.event.type for e in one] == ["Started", "Called"]
        assert [e.event.global_position for e in first] == [a[0]]

    def test_the_oldest_open_write_is_measured(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with database.transaction() as tx:
                store.append(tx, "wf-held", 0, [event("Started")], now=NOW)
                holding.set()
                release.wait(THREAD_TIMEOUT)

        holder = threading.Thread(target=hold, name="log-writer")
        holder.start()
        try:
            assert holding.wait(THREAD_TIMEOUT)
            time.sleep(0.3)  # the age to be measured, not a wait on a condition
            observer = make_db.open_url(make_db.url(), "protools", migrated=False)
            with observer.transaction(write=False) as tx:
                age = store.oldest_write(tx)
        finally:
            release.set()
            holder.join(THREAD_TIMEOUT)
        if make_db.backend == "postgres":
            assert 0.25 <= age < 30
        else:  # one file, no server to ask: not measured (documented)
            assert age == 0.0


class GroupConformance:
    """Consumer groups (durable subscriptions): at least once, in order per workflow, shared
    among members with no duplicate while leases last. A lease of ack_wait -1 s has run out
    already, so expiry is tested without sleeping."""

    def _log(self, database: Database, workflows: dict[str, int]) -> None:
        with database.transaction() as tx:
            for stream_id, count in workflows.items():
                store.append(tx, stream_id, 0, [event(f"E{n}") for n in range(count)], now=NOW)

    @staticmethod
    def _names(deliveries: list[Delivery]) -> list[str]:
        return [f"{d.event.stream_id}/{d.event.version}" for d in deliveries]

    @staticmethod
    def _positions(deliveries: list[Delivery]) -> list[int]:
        return [d.event.global_position for d in deliveries]

    def test_a_group_starts_at_the_start_the_end_or_a_position(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        self._log(database, {"a": 2, "b": 1})
        groups = Subscriptions(database)
        view, created = groups.create("from-start", GroupSettings(), "start")
        assert created
        assert view.filled_to == 0
        assert view.head == 3
        assert view.lag_positions == 3
        assert groups.create("from-end", GroupSettings(), "end")[0].filled_to == 3
        assert groups.create("from-two", GroupSettings(), 2)[0].filled_to == 2
        assert self._names(groups.pull("from-start", "m", 10)) == ["a/1", "a/2", "b/1"]
        assert self._names(groups.pull("from-two", "m", 10)) == ["b/1"]
        assert groups.pull("from-end", "m", 10) == []
        # The same request again finds the group; other settings under its name are refused.
        assert groups.create("from-end", GroupSettings(), "end")[1] is False
        with pytest.raises(GroupExists):
            groups.create("from-end", GroupSettings(max_deliver=3), "end")
        with pytest.raises(PositionPastHead):
            groups.create("too-far", GroupSettings(), 4)
        with pytest.raises(UnknownGroup):
            groups.pull("nobody", "m", 10)
        assert [view.name for view in groups.all()] == ["from-end", "from-start", "from-two"]

    def test_a_workflows_events_go_to_one_member_at_a_time_in_order(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        self._log(database, {"a": 3, "b": 2})
        groups = Subscriptions(database)
        groups.create("g", GroupSettings(), "start")
        first = groups.pull("g", "m1", 1)
        assert self._names(first) == ["a/1"]
        # a/2 waits for a/1's ack: m2 gets only b's events.
        second = groups.pull("g", "m2", 10)
        assert self._names(second) == ["b/1", "b/2"]
        assert groups.pull("g", "m2", 10) == []
        view = groups.show("g")
        assert view.in_flight == 3
        assert view.members == {"m1": 1, "m2": 2}
        groups.ack("g", "m1", self._positions(first))
        assert self._names(groups.pull("g", "m2", 10)) == ["a/2", "a/3"]

    def test_an_ack_for_an_event_not_leased_to_the_member_changes_nothing(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        self._log(database, {"a": 1, "b": 1})
        groups = Subscriptions(database)
        groups.create("g", GroupSettings(), "start")
        a, b = self._positions(groups.pull("g", "m1", 10))
        with pytest.raises(NotLeased) as refused:
            groups.ack("g", "m2", [a])
        assert refused.value.extensions["positions"] == [a]
        with pytest.raises(NotLeased):  # one of the two is not leased: neither is acked
            groups.ack("g", "m1", [a, b + 1])
        assert groups.show("g").unfinished == 2
        groups.ack("g", "m1", [a, b])
        groups.ack("g", "m1", [a, b])  # a retried ack of what the group finished is harmless
        view = groups.show("g")
        assert view.unfinished == 0
        assert view.lag_positions == 0
        with pytest.raises(NotLeased):
            groups.nack("g", "m1", [a], None)

    def test_an_expired_lease_is_delivered_again_and_then_parked(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        self._log(database, {"a": 2})
        groups = Subscriptions(database)
        groups.create("g", GroupSettings(ack_wait=-1.0, max_deliver=2), "start")
        one = groups.pull("g", "m1", 1)
        assert self._names(one) == ["a/1"]
        assert one[0].deliveries == 1
        again = groups.pull("g", "m2", 1)  # m1's lease ran out: a/1 again, to m2
        assert self._names(again) == ["a/1"]
        assert again[0].deliveries == 2
        with pytest.raises(NotLeased):  # m1 acks too late: a/1 went to m2 since
            groups.ack("g", "m1", self._positions(one))
        # Its second lease ran out too: at the next pull it is parked, and a/2 goes on.
        assert self._names(groups.pull("g", "m1", 10)) == ["a/2"]
        view = groups.show("g")
        assert (view.parked, view.redeliveries) == (1, 1)
        parked = groups.parked("g", after=0, limit=10)
        assert [(p.event.version, p.deliveries, p.member) for p in parked] == [(1, 2, "m2")]
        assert groups.replay("g", None) == 1
        replayed = groups.pull("g", "m3", 10)
        assert [(d.event.version, d.deliveries) for d in replayed] == [(1, 1), (2, 2)]

    def test_a_last_lease_running_out_while_a_pull_decides_is_parked_not_handed_out(
        self, make_db: DatabaseFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The pull's decisions (park, lease) see one clock: here the second and last lease
        runs out just before the pull reads the group's pending events. With a clock reading
        for parking and another for choosing, the event was handed out a third time."""
        database = make_db()
        self._log(database, {"a": 1})
        groups = Subscriptions(database)
        groups.create("g", GroupSettings(ack_wait=-1.0, max_deliver=2), "start")
        groups.pull("g", "m1", 1)
        again = groups.pull("g", "m2", 1)  # m1's lease ran out: delivered again, the last time
        assert [d.deliveries for d in again] == [2]
        with database.transaction() as tx:  # m2's lease lasts a moment more
            group_store.extend(tx, "g", self._positions(again), ack_wait=0.3)
        reading = group_store.unparked

        def after_the_lease(tx: Transaction, name: str) -> tuple[list[Pending], float]:
            deadline = time.monotonic() + 10
            while True:  # until the database's clock has passed the lease's end
                pending, now = reading(tx, name)
                leased_until = pending[0].leased_until if pending else None
                if leased_until is None or now >= leased_until or time.monotonic() > deadline:
                    return pending, now
                time.sleep(0.02)

        monkeypatch.setattr(group_store, "unparked", after_the_lease)
        assert groups.pull("g", "m3", 10) == []
        parked = groups.parked("g", after=0, limit=10)
        assert [(p.deliveries, p.member) for p in parked] == [(2, "m2")]

    def test_a_nack_delays_the_event_and_parks_it_after_its_last_delivery(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        self._log(database, {"a": 2, "b": 1})
        groups = Subscriptions(database)
        groups.create("g", GroupSettings(max_deliver=2), "start")
        a1 = self._positions(groups.pull("g", "m1", 1))
        assert groups.nack("g", "m1", a1, delay=600.0) == 0
        # a/1 is due in 10 minutes: a's events wait, b's go.
        assert self._names(groups.pull("g", "m1", 10)) == ["b/1"]
        assert groups.replay("g", a1) == 0  # not parked: nothing to replay
        groups.rewind("g", 0)
        assert self._names(groups.pull("g", "m1", 1)) == ["a/1"]
        assert groups.nack("g", "m1", a1, delay=0.0) == 0
        assert groups.pull("g", "m1", 1)[0].deliveries == 2
        assert groups.nack("g", "m1", a1, delay=0.0) == 1  # its second delivery: parked
        assert self._names(groups.pull("g", "m1", 10)) == ["a/2", "b/1"]

    def test_a_member_holds_at_most_max_ack_pending(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        self._log(database, {f"w{n}": 1 for n in range(5)})
        groups = Subscriptions(database)
        groups.create("g", GroupSettings(max_ack_pending=2), "start")
        held = groups.pull("g", "m1", 10)
        assert len(held) == 2
        assert groups.pull("g", "m1", 10) == []
        assert len(groups.pull("g", "m2", 10)) == 2  # the cap is per member
        groups.ack("g", "m1", self._positions(held)[:1])
        assert len(groups.pull("g", "m1", 10)) == 1
        assert groups.extend("g", "m1", self._positions(held)[1:]) == 30.0  # ack_wait again
        with pytest.raises(NotLeased):
            groups.extend("g", "m2", self._positions(held)[1:])

    def test_a_rewind_delivers_again_and_drops_the_leases(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        self._log(database, {"a": 2})
        groups = Subscriptions(database)
        groups.create("g", GroupSettings(types=("E1",)), "start")
        held = groups.pull("g", "m1", 10)
        assert self._names(held) == ["a/2"]  # only the group's types
        groups.ack("g", "m1", self._positions(held))
        assert groups.pull("g", "m1", 10) == []
        assert groups.rewind("g", "start") == 0
        again = groups.pull("g", "m1", 10)
        assert self._names(again) == ["a/2"]
        groups.rewind("g", "start")  # the lease is dropped with the rest
        with pytest.raises(NotLeased):
            groups.ack("g", "m1", self._positions(again))
        groups.rewind("g", "end")
        groups.ack("g", "m1", self._positions(again))  # at or below the end: finished
        assert groups.show("g").unfinished == 0
        with pytest.raises(PositionPastHead):
            groups.rewind("g", 3)
        groups.delete("g")
        with pytest.raises(UnknownGroup):
            groups.show("g")

    def test_members_on_several_replicas_share_the_log_with_no_duplicate_and_in_order(
        self, make_db: DatabaseFactory
    ) -> None:
        # Three members, each on a database of its own (a replica), pull and ack while two
        # writers append: each event is delivered once (leases outlast the test), and each
        # workflow's events reach the members in version order.
        url = make_db.url()
        writers = [make_db.open_url(url, "protools") for _ in range(2)]
        members = [make_db.open_url(url, "protools") for _ in range(3)]
        Subscriptions(members[0]).create("g", GroupSettings(ack_wait=600.0), "start")
        workflows, versions = 30, 3
        done = threading.Event()
        delivered: list[tuple[int, str, int]] = []  # (member, stream, version)
        lock = threading.Lock()

        def write(index: int) -> None:
            for n in range(workflows):
                for version in range(versions):
                    with writers[index].transaction() as tx:
                        store.append(tx, f"w{index}-{n}", version, [event("E")], now=NOW)

        def consume(index: int) -> None:
            groups = Subscriptions(members[index])
            while True:
                finished = done.is_set()
                got = groups.pull("g", f"m{index}", 7)
                with lock:
                    delivered.extend((index, d.event.stream_id, d.event.version) for d in got)
                if got:
                    groups.ack("g", f"m{index}", self._positions(got))
                elif finished:
                    return

        consumers = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
        for thread in consumers:
            thread.start()
        try:
            run_concurrently(write, 2)
        finally:
            done.set()
            for thread in consumers:
                thread.join(THREAD_TIMEOUT)
        assert not any(thread.is_alive() for thread in consumers)
        expected = {
            (f"w{i}-{n}", version + 1)
            for i in range(2)
            for n in range(workflows)
            for version in range(versions)
        }
        got = [(stream_id, version) for _, stream_id, version in delivered]
        assert len(got) == len(set(got)), "an event was delivered twice"
        assert set(got) == expected
        for stream_id in {s for s, _ in expected}:
            order = [version for s, version in got if s == stream_id]
            assert order == sorted(order), f"{stream_id} out of order: {order}"
        assert len({member for member, _, _ in delivered}) >= 2, "the work was shared"
        assert Subscriptions(members[0]).show("g").unfinished == 0


class OutboxConformance:
    """Messages leased to one relay at a time; leases run out or are extended, by the database's
    clock; delivery is rescheduled or done; the lease fences who may record an outcome."""

    def test_claim_due_leases_due_messages_in_due_order_with_their_payload(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            late = enqueue(tx, "wf-1", delay=-5)
            early = enqueue(tx, "wf-2", delay=-10)
            future = enqueue(tx, "wf-3", delay=100)

        before = time.time()
        with database.transaction() as tx:
            claimed = store.claim_due(tx, lease("relay-a", 60), limit=10)
        after = time.time()

        assert [m.id for m in claimed] == [early, late]
        message = claimed[0]
        assert (message.id, message.stream_id, message.step, message.destination) == (
            early,
            "wf-2",
            "send",
            "mailer",
        )
        assert message.payload == {"stream": "wf-2", "step": "send"}
        assert message.attempts == 1
        assert before - 11 <= message.available_at <= after - 9
        rows = pending_by_id(database)
        assert rows[early]["lease_owner"] == rows[late]["lease_owner"] == "relay-a"
        # The database's clock and this process's clock are the same machine's here.
        assert before + 59 <= rows[early]["lease_expires_at"] <= after + 61
        assert rows[future]["lease_owner"] is None
        assert rows[future]["attempts"] == 0

    def test_claim_due_respects_its_limit(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        with database.transaction() as tx:
            for index in range(5):
                enqueue(tx, f"wf-{index}", delay=index - 10)

        with database.transaction() as tx:
            assert store.claim_due(tx, lease("relay-a"), limit=0) == []
            first = store.claim_due(tx, lease("relay-a"), limit=2)
            rest = store.claim_due(tx, lease("relay-a"), limit=10)

        assert [m.stream_id for m in first] == ["wf-0", "wf-1"]
        assert [m.stream_id for m in rest] == ["wf-2", "wf-3", "wf-4"]

    def test_relays_racing_on_one_database_claim_each_message_once(
        self, make_db: DatabaseFactory
    ) -> None:
        messages, relays = 200, 4
        replicas = [make_db("relays", pool_size=2), make_db("relays", pool_size=2, migrated=False)]
        with replicas[0].transaction() as tx:
            enqueued = {enqueue(tx, f"wf-{index}") for index in range(messages)}

        def relay(index: int) -> list[int]:
            database, owner = replicas[index % len(replicas)], f"relay-{index}"
            claimed: list[int] = []
            for attempt in range(1, 10_000):
                try:
                    with database.transaction() as tx:
                        batch = store.claim_due(tx, lease(owner), limit=random.randint(1, 7))
                except StorageBusy:
                    backoff(attempt)
                    continue
                if not batch:
                    return claimed
                claimed.extend(message.id for message in batch)
            raise AssertionError(f"{owner} never ran out of messages")

        claims = run_concurrently(relay, relays)

        counted = Counter(message_id for batch in claims for message_id in batch)
        assert [message_id for message_id, times in counted.items() if times > 1] == []
        assert set(counted) == enqueued
        rows = pending_by_id(replicas[1])
        for index, batch in enumerate(claims):
            assert {rows[message_id]["lease_owner"] for message_id in batch} <= {f"relay-{index}"}
        assert {row["attempts"] for row in rows.values()} == {1}
        with replicas[1].transaction() as tx:  # every lease is live: nothing left to claim
            assert store.claim_due(tx, lease("late"), limit=1000) == []

    def test_a_live_lease_keeps_others_out_and_an_expired_one_lets_them_in(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            message_id = enqueue(tx, "wf-1")
        with database.transaction() as tx:
            (claimed,) = store.claim_due(tx, lease("relay-a"), limit=10)
        assert (claimed.id, claimed.attempts) == (message_id, 1)

        with database.transaction() as tx:
            assert store.claim_due(tx, lease("relay-b"), limit=10) == []
        assert pending_by_id(database)[message_id]["lease_owner"] == "relay-a"

        with database.transaction() as tx:  # relay-a's lease runs out (made so at once, here)
            assert store.extend_leases(tx, lease("relay-a", EXPIRED), [message_id]) == 1
        with database.transaction() as tx:
            (reclaimed,) = store.claim_due(tx, lease("relay-b"), limit=10)
        assert (reclaimed.id, reclaimed.attempts) == (message_id, 2)
        assert pending_by_id(database)[message_id]["lease_owner"] == "relay-b"

    def test_extending_a_lease_keeps_it_and_never_takes_one_back(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            held = enqueue(tx, "wf-1", lease=lease("relay-a", 1))
            lost = enqueue(tx, "wf-2", lease=lease("relay-a", EXPIRED))
            other = enqueue(tx, "wf-3", lease=lease("relay-b", 1))
        with database.transaction() as tx:  # relay-b takes over the expired one
            (taken,) = store.claim_due(tx, lease("relay-b"), limit=10)
        assert taken.id == lost

        with database.transaction() as tx:
            extended = store.extend_leases(tx, lease("relay-a", 300), [held, lost, other])
            assert store.extend_leases(tx, lease("relay-a", 300), []) == 0
        assert extended == 1
        rows = pending_by_id(database)
        assert rows[held]["lease_owner"] == "relay-a"
        assert rows[held]["lease_expires_at"] >= time.time() + 250
        assert (rows[lost]["lease_owner"], rows[other]["lease_owner"]) == ("relay-b", "relay-b")
        assert rows[other]["lease_expires_at"] <= time.time() + 2

    def test_lock_message_tells_who_holds_which_attempt(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        with database.transaction() as tx:
            message_id = enqueue(tx, "wf-1", lease=lease("relay-a", EXPIRED))
            state = store.lock_message(tx, message_id)
        assert state == store.LeaseState("relay-a", 1)
        assert state.held_by("relay-a", 1)
        assert not state.held_by("relay-a", 2)
        assert not state.held_by("relay-b", 1)
        with database.transaction() as tx:
            store.claim_due(tx, lease("relay-b"), limit=10)
            assert store.lock_message(tx, message_id) == store.LeaseState("relay-b", 2)
            store.complete(tx, message_id)
            assert store.lock_message(tx, message_id) is None

    def test_enqueue_with_a_lease_claims_the_message_for_its_caller(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            message = store.enqueue(
                tx,
                stream_id="wf-1",
                step="send",
                destination="mailer",
                payload={"to": "x"},
                lease=lease("api", 30),
            )
        assert (message.attempts, message.payload, message.stream_id) == (1, {"to": "x"}, "wf-1")

        row = pending_by_id(database)[message.id]
        assert (row["lease_owner"], row["attempts"]) == ("api", 1)
        assert time.time() + 25 <= row["lease_expires_at"] <= time.time() + 31
        with database.transaction() as tx:
            assert store.claim_due(tx, lease("relay"), limit=10) == []

    def test_reschedule_releases_the_lease_and_sets_the_due_time(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            message_id = enqueue(tx, "wf-1", lease=lease("relay-a"))

        with database.transaction() as tx:
            store.reschedule(tx, message_id, delay=120)

        row = pending_by_id(database)[message_id]
        assert (row["lease_owner"], row["lease_expires_at"]) == (None, None)
        assert time.time() + 115 <= row["available_at"] <= time.time() + 121
        with database.transaction() as tx:
            due_in = store.summary(tx).due_in
            assert due_in is not None
            assert 115 <= due_in <= 120
            # Not due yet, although no lease holds it any more...
            assert store.claim_due(tx, lease("relay-b"), limit=10) == []
        with database.transaction() as tx:
            store.reschedule(tx, message_id, delay=-1)  # ... until it is
            (due,) = store.claim_due(tx, lease("relay-b"), limit=10)
        assert (due.id, due.attempts) == (message_id, 2)

    def test_complete_removes_the_message(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        with database.transaction() as tx:
            done = enqueue(tx, "wf-1", step="send", lease=lease("relay-a"))
            kept = enqueue(tx, "wf-1", step="notify")
        with database.transaction() as tx:
            store.complete(tx, done)
            store.complete(tx, done)  # completing twice is harmless

        assert list(pending_by_id(database)) == [kept]
        with database.transaction() as tx:
            assert [m.id for m in store.claim_due(tx, lease("b"), limit=9)] == [kept]

    def test_due_in_is_the_next_due_message_or_lease_expiry(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        with database.transaction() as tx:
            assert store.summary(tx).due_in is None
            first = enqueue(tx, "wf-1", delay=50)
            enqueue(tx, "wf-2", delay=100)
            assert 45 <= (store.summary(tx).due_in or 0) <= 50
            # Leased until after the other one is due: the other one is next.
            store.reschedule(tx, first, delay=-1)
            store.claim_due(tx, lease("relay-a", 300), limit=1)
            assert 95 <= (store.summary(tx).due_in or 0) <= 100

        with database.transaction() as tx:
            # A lease that ends before the message is due does not make it due earlier.
            enqueue(tx, "wf-4", delay=500, lease=lease("relay-a", 20))
            assert 95 <= (store.summary(tx).due_in or 0) <= 100
            enqueue(tx, "wf-5", delay=-30)  # overdue: due now, never a negative wait
            assert store.summary(tx).due_in == 0

        with database.transaction() as tx:
            for message_id in pending_by_id(database):
                store.complete(tx, message_id)
            assert store.summary(tx).due_in is None

    def test_the_summary_counts_every_message_and_ages_the_oldest(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            assert store.summary(tx) == store.OutboxSummary(None, 0, 0.0)
            enqueue(tx, "wf-1", delay=50)
            enqueue(tx, "wf-2", lease=lease("relay-a"))
            summary = store.summary(tx)
        assert summary.depth == 2
        assert 0 <= summary.oldest_age < 5

    def test_skipped_destinations_are_neither_due_nor_claimed(
        self, make_db: DatabaseFactory
    ) -> None:
        """A relay whose circuit to a service is open leaves that service's messages alone."""
        database = make_db()
        with database.transaction() as tx:
            enqueue(tx, "wf-1", destination="generator")
            mail = enqueue(tx, "wf-2", destination="mailer", delay=30)
        with database.transaction() as tx:
            assert store.summary(tx).due_in == 0
            summary = store.summary(tx, skip=["generator"])
            assert summary.due_in is not None
            assert 25 <= summary.due_in <= 30
            assert summary.depth == 2  # the depth counts everything
            assert store.claim_due(tx, lease("relay-a"), limit=10, skip=["generator"]) == []
            store.reschedule(tx, mail, delay=-1)
            claimed = store.claim_due(tx, lease("relay-a"), limit=10, skip=["generator"])
        assert [message.id for message in claimed] == [mail]

    def test_an_attempt_released_unmade_is_claimed_again_under_the_same_number(
        self, make_db: DatabaseFactory
    ) -> None:
        """A parked attempt was never made: undoing its claim leaves no attempt unrecorded."""
        database = make_db()
        with database.transaction() as tx:
            message_id = enqueue(tx, "wf-1", lease=lease("relay-a"))  # attempt 1, leased
            store.release_unattempted(tx, message_id, delay=60)
        row = pending_by_id(database)[message_id]
        assert (row["lease_owner"], row["attempts"]) == (None, 0)
        assert time.time() + 55 <= row["available_at"] <= time.time() + 61
        with database.transaction() as tx:
            assert store.claim_due(tx, lease("relay-b"), limit=10) == []  # not due yet
            # On a message nobody claimed, it only moves the due time: no attempt below zero.
            store.release_unattempted(tx, message_id, delay=-1)
        with database.transaction() as tx:
            (claimed,) = store.claim_due(tx, lease("relay-b"), limit=10)
        assert claimed.attempts == 1  # the first attempt, as if it had never been claimed

    def test_an_unreadable_payload_fails_only_its_own_message(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            broken = enqueue(tx, "wf-1")
            fine = enqueue(tx, "wf-2")
        corrupt_payload(database, broken)
        with database.transaction() as tx:
            claimed = {m.id: m for m in store.claim_due(tx, lease("relay-a"), limit=10)}
        assert set(claimed) == {broken, fine}
        assert claimed[fine].payload == {"stream": "wf-2", "step": "send"}
        with pytest.raises(ValueError, match="Expecting"):
            _ = claimed[broken].payload


def corrupt_payload(database: Database, message_id: int) -> None:
    """Overwrite a message's payload with text that is not JSON, behind the store's back."""
    raw = "UPDATE outbox SET payload = '{not json' WHERE id = " + str(int(message_id))
    with database.transaction() as tx:
        tx.run_script(raw)


# --- command store -------------------------------------------------------------------------------


class CommandStoreConformance:
    """The first writer of an idempotency key wins, and everyone gets its command back."""

    def test_find_command_finds_what_was_recorded(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        command = store.Command("key-1", "sha256:abc", "wf-1", NOW)
        with database.transaction() as tx:
            assert store.find_command(tx, "key-1") is None
            assert store.record_command(tx, command) == command

        with database.transaction(write=False) as tx:
            assert store.find_command(tx, "key-1") == command
            assert store.find_command(tx, "KEY-1") is None

    def test_the_retention_forgets_only_the_commands_of_workflows_ended_before_the_cutoff(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        ended = {"old-1": NOW - 1000, "old-2": NOW - 900, "old-3": NOW - 800, "recent": NOW - 10}
        with database.transaction() as tx:
            for name, ended_at in ended.items():
                store.record_command(tx, store.Command(name, "fp", f"wf-{name}", ended_at - 5))
                store.append(tx, f"wf-{name}", 0, [event("WorkflowStarted")], now=ended_at - 5)
                store.append(tx, f"wf-{name}", 1, [event("WorkflowCompleted")], now=ended_at)
            # Older than all of them, but still running: kept however old.
            store.record_command(tx, store.Command("running", "fp", "wf-running", NOW - 5000))
            store.append(tx, "wf-running", 0, [event("WorkflowStarted")], now=NOW - 5000)
        cutoff = NOW - 100
        with database.transaction() as tx:  # the oldest first, a batch at a time
            assert store.expire_commands(tx, cutoff=cutoff, batch=2) == 2
        with database.transaction() as tx:
            assert store.find_command(tx, "old-1") is None
            assert store.find_command(tx, "old-3") is not None
            assert store.expire_commands(tx, cutoff=cutoff, batch=2) == 1
            assert store.expire_commands(tx, cutoff=cutoff, batch=2) == 0
        with database.transaction(write=False) as tx:
            left = {c["idempotency_key"] for c in tx.fetch_all("all_commands")}
            assert left == {"recent", "running"}
            assert len(store.read_stream(tx, "wf-old-1")) == 2  # the events stay

    def test_a_repeated_key_gets_the_first_command_back(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        first = store.Command("key-1", "fp-1", "wf-1", NOW)
        with database.transaction() as tx:
            store.record_command(tx, first)
        with database.transaction() as tx:
            assert (
                store.record_command(tx, store.Command("key-1", "fp-2", "wf-2", NOW + 1)) == first
            )
        with database.transaction(write=False) as tx:
            assert store.find_command(tx, "key-1") == first

    def test_concurrent_writers_of_one_key_all_get_the_same_command(
        self, make_db: DatabaseFactory
    ) -> None:
        writers = 10
        replicas = [make_db(pool_size=5), make_db(pool_size=5, migrated=False)]

        def writer(index: int) -> store.Command:
            candidate = store.Command("key-1", f"fp-{index}", f"wf-{index}", NOW + index)
            for attempt in range(1, 1000):
                try:
                    with replicas[index % len(replicas)].transaction() as tx:
                        recorded = store.record_command(tx, candidate)
                        time.sleep(0.01)  # hold the key uncommitted while the others try it
                    return recorded
                except StorageBusy:
                    backoff(attempt)
            raise AssertionError(f"writer {index} never got an answer")

        answers = run_concurrently(writer, writers)

        assert len(set(answers)) == 1
        (winner,) = set(answers)
        assert winner in {
            store.Command("key-1", f"fp-{i}", f"wf-{i}", NOW + i) for i in range(writers)
        }
        with replicas[0].transaction(write=False) as tx:
            assert store.find_command(tx, "key-1") == winner


# --- transactions and error translation ----------------------------------------------------------


class BulkConformance:
    """Many rows at once, through the same transaction as everything else."""

    def test_copy_rows_inserts_every_row_and_rolls_back_with_its_transaction(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        columns = ("stream_id", "version", "type", "data", "recorded_at")
        rows = [(f"wf-{n // 3}", n % 3 + 1, "Seeded", f'{{"n": {n}}}', NOW) for n in range(3000)]
        with database.transaction() as tx:
            assert tx.copy_rows("events", columns, iter(rows)) == 3000
        with database.transaction(write=False) as tx:
            assert [e.data for e in store.read_stream(tx, "wf-7")] == [
                {"n": 21},
                {"n": 22},
                {"n": 23},
            ]
            assert len(store.read_all(tx, limit=5000)) == 3000

        class Undo(Exception):
            pass

        def copy_then_fail() -> None:
            with database.transaction() as tx:
                command = ("idempotency_key", "fingerprint", "workflow_id", "created_at")
                tx.copy_rows("commands", command, [("k", "f", "wf", NOW)])
                raise Undo

        with pytest.raises(Undo):
            copy_then_fail()
        with database.transaction(write=False) as tx:
            assert store.find_command(tx, "k") is None

    def test_copy_rows_refuses_names_that_are_not_plain_identifiers(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with pytest.raises(ValueError, match="identifier"), database.transaction() as tx:
            tx.copy_rows("events; DROP TABLE events", ("stream_id",), [])


class TimeoutsConformance:
    """No statement waits without limit: every session carries the configured timeouts."""

    def test_sessions_carry_the_configured_timeouts(self, make_db: DatabaseFactory) -> None:
        timeouts = Timeouts(lock=0.25, statement=7.0, idle_in_transaction=11.0)
        database = make_db.open_url(make_db.url(), "protools", timeouts=timeouts)
        with database.transaction(write=False) as tx:
            row = tx.fetch_one("session_timeouts")
        assert row is not None
        assert row["lock_ms"] == 250
        if database.dialect == "postgres":
            assert (row["statement_ms"], row["idle_in_transaction_ms"]) == (7000, 11000)

    def test_a_lock_held_past_the_lock_timeout_is_a_storage_busy(
        self, make_db: DatabaseFactory
    ) -> None:
        url = make_db.url()
        holder = make_db.open_url(url, "protools")
        waiter = make_db.open_url(url, "protools", timeouts=Timeouts(lock=0.2), migrated=False)
        release, held = threading.Event(), threading.Event()

        def hold() -> None:
            with holder.transaction() as tx:
                store.record_command(tx, store.Command("k", "fp", "wf-1", NOW))
                held.set()
                release.wait(THREAD_TIMEOUT)

        thread = threading.Thread(target=hold)
        thread.start()
        try:
            assert held.wait(THREAD_TIMEOUT)
            started = time.monotonic()
            with pytest.raises(StorageBusy), waiter.transaction() as tx:
                store.record_command(tx, store.Command("k", "fp", "wf-2", NOW))
            assert time.monotonic() - started < 5
        finally:
            release.set()
            thread.join(THREAD_TIMEOUT)

    def test_migrators_wait_for_each_other_beyond_the_lock_timeout(
        self, make_db: DatabaseFactory
    ) -> None:
        # PostgreSQL migrators queue on an advisory lock with no timeout; SQLite's take the one
        # write lock, within the busy timeout (each migration takes milliseconds).
        lock = 0.01 if make_db.backend == "postgres" else 5.0
        url = make_db.url()
        databases = [
            make_db.open_url(url, "protools", timeouts=Timeouts(lock=lock), migrated=False)
            for _ in range(4)
        ]
        applied = run_concurrently(lambda index: migrate(databases[index]), 4)
        assert sorted(version for versions in applied for version in versions) == (
            shipped_versions(databases[0])
        )


class TransactionConformance:
    """All or nothing; the driver's exceptions come out as :mod:`metallica.storage.errors`."""

    def test_an_exception_rolls_back_and_comes_out_unchanged(
        self, make_db: DatabaseFactory
    ) -> None:
        class Boom(Exception):
            pass

        database = make_db()

        def failing() -> None:
            with database.transaction() as tx:
                store.append(tx, "wf-1", 0, [event("Started")], now=NOW)
                enqueue(tx, "wf-1")
                raise Boom

        with pytest.raises(Boom):
            failing()

        with database.transaction(write=False) as tx:
            assert store.read_all(tx) == []
            assert store.pending(tx) == []

    def test_a_unique_violation_is_translated_and_rolls_back(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()

        def recording_twice() -> None:
            with database.transaction() as tx:
                store.append(tx, "wf-1", 0, [event("Started")], now=NOW)
                tx.execute("record_migration", version=9999, name="twice")
                tx.execute("record_migration", version=9999, name="twice")

        with pytest.raises(UniqueViolation) as violation:
            recording_twice()

        assert isinstance(violation.value, StorageError)
        assert "schema_migrations" in violation.value.constraint
        assert violation.value.__cause__ is not None  # the driver's error, kept for the logs
        assert 9999 not in applied_versions(database)
        with database.transaction(write=False) as tx:
            assert store.read_all(tx) == []

    def test_a_duplicate_outbox_step_is_a_unique_violation(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        with database.transaction() as tx:
            enqueue(tx, "wf-1", step="send")
        with pytest.raises(UniqueViolation) as violation, database.transaction() as tx:
            enqueue(tx, "wf-1", step="send")
        assert "outbox" in violation.value.constraint
        assert len(pending_by_id(database)) == 1

    def test_other_constraint_failures_are_storage_errors(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        with pytest.raises(StorageError) as failure, database.transaction() as tx:
            tx.execute("record_migration", version=99, name=None)  # NOT NULL
        assert not isinstance(failure.value, UniqueViolation | StorageBusy | StorageUnavailable)

    def test_an_append_that_would_leave_a_gap_is_a_conflict(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        with database.transaction() as tx:
            store.append(tx, "wf-1", 0, [event("First")], now=NOW)
        for expected in (2, 5, -1):
            with pytest.raises(store.VersionConflict), database.transaction() as tx:
                store.append(tx, "wf-1", expected, [event("Later")], now=NOW)
        with database.transaction(write=False) as tx:
            assert [e.version for e in store.read_stream(tx, "wf-1")] == [1]

    def test_an_append_of_several_events_is_all_or_a_conflict(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            first = store.append(tx, "wf-1", 0, [event("A")], now=NOW)
        # Versions 1 and 2 asked for, 1 taken: version 2 alone would go in, out of turn.
        with pytest.raises(store.VersionConflict) as conflict, database.transaction() as tx:
            store.append(tx, "wf-1", 0, [event("B"), event("C")], now=NOW)
        assert "already has a version 1" in str(conflict.value)
        with database.transaction() as tx:
            later = store.append(tx, "wf-1", 1, [event("B"), event("C"), event("D")], now=NOW)
        assert first[0] < later[0] < later[1] < later[2]
        with database.transaction(write=False) as tx:
            stream = store.read_stream(tx, "wf-1")
        assert [(e.version, e.type, e.global_position) for e in stream] == [
            (1, "A", first[0]),
            (2, "B", later[0]),
            (3, "C", later[1]),
            (4, "D", later[2]),
        ]

    def test_a_missing_table_is_a_storage_error(self, make_db: DatabaseFactory) -> None:
        database = make_db(migrated=False)
        with pytest.raises(StorageError) as failure, database.transaction(write=False) as tx:
            store.read_stream(tx, "wf-1")
        assert not isinstance(failure.value, UniqueViolation | StorageBusy | StorageUnavailable)
        with database.transaction(write=False) as tx:  # the connection went back healthy
            assert tx.fetch_one("migrations_table_exists") is None

    def test_a_read_only_transaction_leaves_its_connection_writable(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db(pool_size=1)
        with database.transaction() as tx:
            store.append(tx, "wf-1", 0, [event("Started")], now=NOW)
        with database.transaction(write=False) as tx:
            assert len(store.read_stream(tx, "wf-1")) == 1
        with database.transaction() as tx:  # the same, only connection
            store.append(tx, "wf-1", 1, [event("Next")], now=NOW)
        with database.transaction(write=False) as tx:
            assert len(store.read_stream(tx, "wf-1")) == 2

    def test_more_threads_than_connections_wait_their_turn(self, make_db: DatabaseFactory) -> None:
        database = make_db(pool_size=2)

        def worker(index: int) -> None:
            with database.transaction() as tx:
                store.append(tx, f"wf-{index}", 0, [event("Started")], now=NOW)
                time.sleep(0.01)

        run_concurrently(worker, 8)

        with database.transaction(write=False) as tx:
            assert len(store.read_all(tx)) == 8


class GroupCommitConformance:
    """The hot path's group commit on a real backend: units that wait together share one
    transaction; a unit that fails is told alone and the others are committed; a caller is
    answered only once its writes can be read by anyone."""

    def _batch_behind_a_slow_first(
        self, writer: GroupCommit, first: Callable[[Transaction], T], others: list[Any]
    ) -> tuple[T | BaseException, list[Any]]:
        """``first`` runs alone and holds its transaction open until every one of ``others``
        waits; then ``others`` run as one batch. Each one's result, or the exception it got."""
        release = threading.Event()

        def slow_first(tx: Transaction) -> T:
            assert release.wait(THREAD_TIMEOUT)
            return first(tx)

        def outcome(work: Any) -> Any:
            try:
                return writer.run(work)
            except Exception as error:
                return error

        with ThreadPoolExecutor(max_workers=len(others) + 1) as pool:
            leader = pool.submit(outcome, slow_first)
            assert eventually(lambda: writer.batches == 0 and writer.waiting == 0)
            followers = [pool.submit(outcome, work) for work in others]
            assert eventually(lambda: writer.waiting == len(others))
            release.set()
            return leader.result(THREAD_TIMEOUT), [f.result(THREAD_TIMEOUT) for f in followers]

    def test_units_that_wait_together_share_one_commit(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        writer = GroupCommit(database)

        def starting(stream: str) -> Callable[[Transaction], list[int]]:
            return lambda tx: store.append(tx, stream, 0, [event("Started")], now=NOW)

        first, others = self._batch_behind_a_slow_first(
            writer, starting("wf-first"), [starting(f"wf-{i}") for i in range(12)]
        )
        assert (writer.batches, writer.units) == (2, 13)
        with database.transaction(write=False) as tx:
            stored = {e.stream_id: e.global_position for e in store.read_all(tx)}
        assert first == [stored["wf-first"]]
        assert others == [[stored[f"wf-{i}"]] for i in range(12)]

    def test_a_conflict_in_a_batch_is_its_units_alone(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        with database.transaction() as tx:
            store.append(tx, "taken", 0, [event("Started")], now=NOW)
        writer = GroupCommit(database)

        def append(stream: str, version: int) -> Callable[[Transaction], list[int]]:
            return lambda tx: store.append(tx, stream, version, [event("Next")], now=NOW)

        _, outcomes = self._batch_behind_a_slow_first(
            writer,
            append("alone", 0),
            [append("a", 0), append("taken", 0), append("b", 0), append("taken", 1)],
        )
        assert isinstance(outcomes[1], store.VersionConflict)  # version 1 was taken
        assert [type(o) for o in (outcomes[0], outcomes[2], outcomes[3])] == [list] * 3
        with database.transaction(write=False) as tx:
            logged = [(e.stream_id, e.version) for e in store.read_all(tx)]
        assert sorted(logged) == sorted(
            [("taken", 1), ("alone", 1), ("a", 1), ("b", 1), ("taken", 2)]
        )
        positions = [position for outcome in outcomes if isinstance(outcome, list)
                     for position in outcome]  # fmt: skip
        assert positions == sorted(positions), "positions in the order the units ran"

    def test_an_error_a_unit_sent_without_reading_it_is_that_units_alone(
        self, make_db: DatabaseFactory
    ) -> None:
        """The batch flushes after each unit, so what a unit sent and never read fails that
        unit, not the next one, and not the batch."""
        database = make_db()
        started = [event("WorkflowStarted")]
        with database.transaction() as tx:
            append_projected(tx, "taken", 0, started, now=NOW)
        writer = GroupCommit(database)

        def start(stream: str, row: str) -> Callable[[Transaction], str]:
            def work(tx: Transaction) -> str:
                store.send_append(tx, stream, 0, started, now=NOW).get()
                projection.project(tx, row, started, now=NOW)  # sent, never read
                return stream

            return work

        _, outcomes = self._batch_behind_a_slow_first(
            writer, start("alone", "alone"), [start("a", "a"), start("c", "taken"), start("b", "b")]
        )
        assert outcomes[0] == "a"
        assert outcomes[2] == "b"
        assert isinstance(outcomes[1], UniqueViolation)  # the row "taken" exists
        with database.transaction(write=False) as tx:
            stored = sorted(e.stream_id for e in store.read_all(tx))
        assert stored == ["a", "alone", "b", "taken"]


class PipelineConformance:
    """A pipelined transaction (the group commit's): statements sent without waiting are
    answered together at the flush, an error among them comes out there as the backend's
    error, and the transaction commits all or nothing, as any other."""

    def test_what_was_sent_is_answered_at_the_flush_and_committed(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction(pipeline=True) as tx:
            store.take_log_turn(tx)
            first = store.send_append(tx, "wf-1", 0, [event("WorkflowStarted")], now=NOW)
            projection.project(tx, "wf-1", [event("WorkflowStarted")], now=NOW)
            second = store.send_append(tx, "wf-2", 0, [event("A"), event("B")], now=NOW)
            sent = store.send_enqueue(
                tx, stream_id="wf-1", step="send", destination="mailer", payload={"n": 1}
            )
            tx.flush()
            positions = first.get() + second.get()
            message = sent.get()
        with database.transaction(write=False) as tx:
            stored = [(e.stream_id, e.global_position) for e in store.read_all(tx)]
            workflows = tx.fetch_all("all_workflows")
            pending = store.pending(tx)
        assert [position for _, position in stored] == positions
        assert [row["position"] for row in workflows] == [positions[0]]  # taken in the database
        assert [row["id"] for row in pending] == [message.id]

    def test_a_conflict_sent_without_waiting_comes_out_when_read(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        with database.transaction() as tx:
            store.append(tx, "wf-1", 0, [event("Started")], now=NOW)

        def conflicting() -> None:
            with database.transaction(pipeline=True) as tx:
                taken = store.send_append(tx, "wf-1", 0, [event("Again")], now=NOW)
                store.send_append(tx, "wf-2", 0, [event("Started")], now=NOW)
                taken.get()

        with pytest.raises(store.VersionConflict):
            conflicting()
        with database.transaction(write=False) as tx:
            assert [e.stream_id for e in store.read_all(tx)] == ["wf-1"]  # wf-2 rolled back

    def test_an_error_among_the_statements_sent_rolls_all_of_them_back(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        started = [event("WorkflowStarted")]

        def projected_twice() -> None:
            with database.transaction(pipeline=True) as tx:
                store.send_append(tx, "wf-1", 0, started, now=NOW)
                projection.project(tx, "wf-1", started, now=NOW)
                projection.project(tx, "wf-1", started, now=NOW)  # its row again: refused
                tx.flush()

        with pytest.raises(UniqueViolation):
            projected_twice()
        with database.transaction(write=False) as tx:
            assert store.read_all(tx) == []
            assert tx.fetch_all("all_workflows") == []
        with database.transaction(pipeline=True) as tx:  # the connection is fit for use again
            store.send_append(tx, "wf-1", 0, started, now=NOW).get()
        with database.transaction(write=False) as tx:
            assert [e.stream_id for e in store.read_all(tx)] == ["wf-1"]


class BoardConformance:
    """The health board: one row per replica, replaced by its next report, aged by the
    database's clock, forgotten once silent long enough."""

    def test_a_report_replaces_the_replicas_last_one(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        assert board.read(database) == []
        board.publish(database, "protools-2", {"ready": True, "admission": {"limit": 8}})
        board.publish(database, "protools-1", {"ready": False})
        board.publish(database, "protools-1", {"ready": True, "refusals": {"queue-full": 3}})
        reports = board.read(database)
        assert [(r.replica, dict(r.report)) for r in reports] == [
            ("protools-1", {"ready": True, "refusals": {"queue-full": 3}}),
            ("protools-2", {"ready": True, "admission": {"limit": 8}}),
        ]
        assert all(0 <= r.age < board.SILENT_AFTER and not r.silent for r in reports)

    def test_long_silent_replicas_are_forgotten(self, make_db: DatabaseFactory) -> None:
        database = make_db()
        board.publish(database, "gone", {"ready": True})
        with database.transaction() as tx:  # every report is older than "a second from now"
            tx.execute("forget_silent_replicas", keep=-1.0)
        assert board.read(database) == []
        board.publish(database, "back", {"ready": True})
        assert [r.replica for r in board.read(database)] == ["back"]


class ClosingConformance:
    """``close()`` waits for the transactions under way, never closes a connection in use, and
    refuses new transactions; a transaction that outlives the wait fails the close loudly."""

    def _transaction_in_a_thread(
        self, database: Database, hold: threading.Event
    ) -> tuple[threading.Thread, threading.Event, list[Any]]:
        """A thread that opens a write transaction, says so, waits for ``hold``, then appends
        an event and commits; its outcome ("committed" or the exception) lands in the list."""
        inside, outcome = threading.Event(), list[Any]()

        def work() -> None:
            try:
                with database.transaction() as tx:
                    inside.set()
                    assert hold.wait(THREAD_TIMEOUT)
                    store.append(tx, "wf-1", 0, [event("Started")], now=NOW)
                outcome.append("committed")
            except BaseException as error:
                outcome.append(error)

        thread = threading.Thread(target=work, name="closing-conformance")
        thread.start()
        assert inside.wait(THREAD_TIMEOUT)
        return thread, inside, outcome

    def test_close_waits_for_the_transaction_under_way_then_refuses_new_ones(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        hold = threading.Event()
        thread, _, outcome = self._transaction_in_a_thread(database, hold)
        closing = threading.Thread(target=database.close, name="closer")
        closing.start()
        closing.join(0.2)
        assert closing.is_alive(), "close() returned while a transaction was under way"
        hold.set()
        closing.join(THREAD_TIMEOUT)
        thread.join(THREAD_TIMEOUT)
        assert not closing.is_alive()
        assert outcome == ["committed"]
        with pytest.raises(DatabaseClosed), database.transaction(write=False):
            pass
        reopened = make_db()  # what the closed one committed is there
        with reopened.transaction(write=False) as tx:
            assert [e.type for e in store.read_stream(tx, "wf-1")] == ["Started"]

    def test_a_transaction_that_outlives_the_wait_fails_the_close_and_keeps_its_connection(
        self, make_db: DatabaseFactory
    ) -> None:
        database = make_db()
        hold = threading.Event()
        thread, _, outcome = self._transaction_in_a_thread(database, hold)
        with pytest.raises(StillInUse, match="1 transaction"):
            database.close(timeout=0.1)
        hold.set()  # its connection was left open: the transaction still commits
        thread.join(THREAD_TIMEOUT)
        assert outcome == ["committed"]
        database.close(timeout=1)  # nothing in use any more: a second close is quiet
        with make_db().transaction(write=False) as tx:
            assert len(store.read_stream(tx, "wf-1")) == 1

    def test_closing_under_concurrent_transactions_many_times_loses_none_that_began(
        self, make_db: DatabaseFactory
    ) -> None:
        """Threads keep opening transactions while the database is closed under them: each
        one that began commits, the others are refused with DatabaseClosed, nothing else."""
        for round_ in range(8):
            committed = self._close_under_writers(make_db(f"round{round_}", pool_size=3))
            with make_db(f"round{round_}").transaction(write=False) as tx:
                stored = {e.stream_id for e in store.read_all(tx, limit=100_000)}
            assert stored == set(committed)

    @staticmethod
    def _close_under_writers(database: Database) -> list[str]:
        """Close ``database`` while 4 threads write to it; the streams whose commit returned."""
        stop = threading.Event()
        committed: list[str] = []
        unexpected: list[BaseException] = []

        def writer(index: int) -> None:
            for number in range(10_000):
                if stop.is_set():
                    return
                stream = f"wf-{index}-{number}"
                try:
                    with database.transaction() as tx:
                        store.append(tx, stream, 0, [event("Started")], now=NOW)
                        time.sleep(random.uniform(0, 0.003))
                except DatabaseClosed:
                    return
                except BaseException as error:
                    unexpected.append(error)
                    return
                committed.append(stream)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(random.uniform(0.005, 0.05))  # let them run a while: a varied instant
        database.close()
        stop.set()
        for thread in threads:
            thread.join(THREAD_TIMEOUT)
        assert unexpected == []
        return committed
