"""PostgreSQL only: the pool survives connections killed under it and a server crash."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from metallica.load.pg_cluster import ThrowawayCluster
from metallica.protools import store
from metallica.storage import Database, StorageUnavailable, open_database
from metallica.storage.group_commit import GroupCommit
from metallica.storage.migrate import migrate
from tests.pg_admin import (
    create_database,
    database_name,
    drop_database,
    terminate_backends,
    with_database,
)
from tests.storage.conformance import LIVE, NOW, DatabaseFactory, enqueue, event

pytestmark = pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)]
)


def append_and_count(database: Database, stream_id: str) -> int:
    with database.transaction() as tx:
        version = len(store.read_stream(tx, stream_id))
        store.append(tx, stream_id, version, [event("Tick")], now=NOW)
    with database.transaction(write=False) as tx:
        return len(store.read_stream(tx, stream_id))


def test_the_pool_replaces_connections_killed_between_transactions(
    make_db: DatabaseFactory, postgres_server_url: str
) -> None:
    database = make_db(pool_size=3)
    url = make_db.url()
    assert append_and_count(database, "wf-1") == 1

    assert terminate_backends(postgres_server_url, database_name(url)) >= 1

    # More transactions than the pool has connections, so every dead one is met and replaced.
    for expected in range(2, 7):
        assert append_and_count(database, "wf-1") == expected


def test_a_connection_killed_mid_transaction_is_unavailable_then_the_pool_recovers(
    make_db: DatabaseFactory, postgres_server_url: str
) -> None:
    database = make_db(pool_size=1)
    url = make_db.url()

    def killed_midway() -> None:
        with database.transaction() as tx:
            store.append(tx, "wf-1", 0, [event("Lost")], now=NOW)
            terminate_backends(postgres_server_url, database_name(url))
            store.read_stream(tx, "wf-1")

    with pytest.raises(StorageUnavailable):
        killed_midway()

    assert append_and_count(database, "wf-1") == 1  # the killed transaction left nothing


def test_a_batch_that_meets_dead_pooled_connections_runs_again_on_live_ones(
    make_db: DatabaseFactory, postgres_server_url: str
) -> None:
    """A pipelined transaction learns its connection is dead only at its first round trip,
    after the units ran: nothing reached the server then, so the group commit runs the batch
    again on another connection, as a transaction of its own would have met BEGIN's failure."""
    database = make_db(pool_size=2)
    writer = GroupCommit(database)
    assert writer.run(lambda tx: store.append(tx, "wf-1", 0, [event("A")], now=NOW))

    assert terminate_backends(postgres_server_url, database_name(make_db.url())) >= 1

    assert writer.run(lambda tx: store.append(tx, "wf-1", 1, [event("B")], now=NOW))
    assert append_and_count(database, "wf-1") == 3


@pytest.fixture
def crash_database(postgres_cluster: ThrowawayCluster) -> Iterator[Database]:
    """A migrated database on the cluster this session controls (the one a crash test restarts)."""
    dbname = create_database(postgres_cluster.url)
    database = open_database(with_database(postgres_cluster.url, dbname), "protools", pool_size=2)
    try:
        migrate(database)
        yield database
    finally:
        database.close()
        drop_database(postgres_cluster.url, dbname)


def test_the_pool_reconnects_after_the_server_crashes_and_restarts(
    backend: str, crash_database: Database, postgres_cluster: ThrowawayCluster
) -> None:
    assert append_and_count(crash_database, "wf-1") == 1

    postgres_cluster.restart_immediate()

    assert append_and_count(crash_database, "wf-1") == 2


def test_renewing_leases_skips_a_message_a_commit_under_way_holds_instead_of_waiting(
    make_db: DatabaseFactory,
) -> None:
    """The group commit's batch holds several messages' rows until it commits; a renewal that
    waited for one of them while holding others deadlocked with it (PostgreSQL broke the tie
    after its deadlock timeout: a 1 s stall of the whole batch). It skips them now."""
    database = make_db(pool_size=3)
    holder = store.Lease("replica-1", LIVE)
    with database.transaction() as tx:
        recorded, in_flight = (enqueue(tx, f"wf-{i}", lease=holder) for i in range(2))
    with database.transaction() as batch:
        store.complete(batch, recorded)  # a batch recording it: its row is locked until commit
        started = time.monotonic()
        with database.transaction() as renewal:
            held = store.extend_leases(renewal, holder, [recorded, in_flight])
        waited = time.monotonic() - started
    assert held == 1  # the message in flight; the one being recorded left alone
    assert waited < 1.0, f"the renewal waited {waited:.1f} s for the batch's row"
