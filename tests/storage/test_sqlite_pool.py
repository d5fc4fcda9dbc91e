"""The SQLite adapter's pool: a connection that breaks is replaced, never lost or reused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from metallica.storage.migrate import migrate
from metallica.storage.sqlite import SQLiteDatabase


class Broken(Exception):
    pass


def break_a_transaction(database: SQLiteDatabase) -> None:
    """Close the transaction's connection under it, then fail: its ROLLBACK will fail too."""
    with database.transaction() as tx:
        tx._connection.close()
        raise Broken


def test_a_connection_whose_rollback_fails_is_replaced(tmp_path: Path) -> None:
    database = SQLiteDatabase(f"sqlite:///{tmp_path}/db.sqlite", "protools", pool_size=2)
    try:
        migrate(database)
        for _ in range(3):  # more failures than the pool has connections
            with pytest.raises(Broken):
                break_a_transaction(database)

        # Still two working connections: two transactions at once both get one.
        done: list[int] = []
        gate = threading.Barrier(2)

        def use() -> None:
            with database.transaction(write=False) as tx:
                gate.wait(timeout=10)
                row = tx.fetch_one("read_stream", stream_id="nothing")
                done.append(0 if row is None else 1)

        threads = [threading.Thread(target=use) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert done == [0, 0]
    finally:
        database.close()


def test_closed_connections_are_not_left_open(tmp_path: Path) -> None:
    database = SQLiteDatabase(f"sqlite:///{tmp_path}/db.sqlite", "protools", pool_size=1)
    with database.transaction() as tx:
        connection = tx._connection
    database.close()
    with pytest.raises(sqlite3.ProgrammingError):
        connection.execute("SELECT 1")
