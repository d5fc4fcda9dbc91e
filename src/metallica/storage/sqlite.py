"""SQLite adapter: the embedded default, one file per service, WAL mode.

Writes take the database lock up front with ``BEGIN IMMEDIATE`` so two writers never deadlock
upgrading a read lock; ``busy_timeout`` makes a writer wait for the lock instead of failing.
Connections are pooled in a queue and used by one thread at a time; :meth:`SQLiteDatabase.close`
waits for the transactions under way and never closes a connection in use
(:mod:`metallica.storage.closing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from metallica.storage import errors
from metallica.storage.closing import CLOSE_TIMEOUT, InUse
from metallica.storage.ports import DEFAULT_TIMEOUTS, Answered, Row, Timeouts
from metallica.storage.queries import identifier, load_queries
from metallica.storage.writer_lock import ProcessWriterLock


def path_from_url(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` to a path."""
    if not url.startswith("sqlite:///"):
        raise errors.UnsupportedDatabaseUrl(f"not a SQLite URL: {url.split(':', 1)[0]}:...")
    return Path(url.removeprefix("sqlite:///"))


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Turn sqlite3's exceptions into :mod:`metallica.storage.errors`."""
    try:
        yield
    except sqlite3.IntegrityError as error:
        message = str(error)
        if message.startswith("UNIQUE constraint failed: "):
            raise errors.UniqueViolation(
                message.removeprefix("UNIQUE constraint failed: ")
            ) from error
        raise errors.StorageError(message) from error
    except sqlite3.OperationalError as error:
        message = str(error)
        if "locked" in message or "busy" in message:
            raise errors.StorageBusy(message) from error
        raise errors.StorageError(message) from error


class SQLiteTransaction:
    """A transaction on one pooled connection."""

    def __init__(self, connection: sqlite3.Connection, queries: dict[str, str]) -> None:
        self._connection = connection
        self._queries = queries

    def send(self, query: str, /, **params: Any) -> Answered:
        """Run at once: SQLite is in this process, there is no round trip to save."""
        with _translated_errors():
            cursor = self._connection.execute(self._queries[query], params)
            rows = [dict(row) for row in cursor.fetchall()] if cursor.description else []
        return Answered(rows, cursor.rowcount)

    def flush(self) -> None:
        """Nothing waits: every statement ran when it was sent."""

    def execute(self, query: str, /, **params: Any) -> int:
        with _translated_errors():
            return self._connection.execute(self._queries[query], params).rowcount

    def fetch_one(self, query: str, /, **params: Any) -> Row | None:
        with _translated_errors():
            row = self._connection.execute(self._queries[query], params).fetchone()
        return dict(row) if row is not None else None

    def fetch_all(self, query: str, /, **params: Any) -> list[Row]:
        with _translated_errors():
            rows = self._connection.execute(self._queries[query], params).fetchall()
        return [dict(row) for row in rows]

    def run_script(self, sql: str, /) -> None:
        statement = ""
        with _translated_errors():
            for line in sql.splitlines(keepends=True):
                statement += line
                if sqlite3.complete_statement(statement):
                    self._connection.execute(statement)
                    statement = ""
            if statement.strip():
                self._connection.execute(statement)

    def copy_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], /
    ) -> int:
        names = ", ".join(identifier(column) for column in columns)
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {identifier(table)} ({names}) VALUES ({marks})"
        with _translated_errors():
            return self._connection.executemany(sql, rows).rowcount

    def lock_migrations(self) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the only write lock."""


class SQLiteDatabase:
    """A pool of connections to one SQLite file.

    A connection that fails to roll back is closed and replaced on its next use, so a broken
    connection never goes back into the pool and the pool never shrinks.
    """

    dialect = "sqlite"
    listens = False  # one file, no server to notify: readers poll

    def __init__(
        self, url: str, schema: str, *, pool_size: int = 8, timeouts: Timeouts = DEFAULT_TIMEOUTS
    ) -> None:
        self.schema = schema
        self.path = path_from_url(url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = round(timeouts.lock * 1000)
        self._queries = load_queries(self.dialect, schema)
        self._pool: queue.LifoQueue[sqlite3.Connection | None] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._writer = threading.Lock()
        self._writers = ProcessWriterLock(self.path.with_name(self.path.name + "-writer"))
        self._connections: set[sqlite3.Connection] = set()
        self._in_use = InUse()
        for _ in range(pool_size):
            self._pool.put(self._connect())

    def _connect(self) -> sqlite3.Connection:
        with _translated_errors():
            connection = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_timeout_ms / 1000,
            )
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
        with self._lock:
            self._connections.add(connection)
        return connection

    def _discard(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            self._connections.discard(connection)
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    @contextmanager
    def transaction(
        self, *, write: bool = True, pipeline: bool = False
    ) -> Iterator[SQLiteTransaction]:
        # ``pipeline`` changes nothing here: SQLite runs in this process, with no round trips.
        # SQLite has one write lock. Writers of this process queue for it here, each woken the
        # moment the one before commits, then queue with those of our other processes on the
        # same file (:mod:`.writer_lock`); left to SQLite's busy handler they would poll it
        # with sleeps of up to 100 ms, a long tail under load, and starve each other.
        with self._in_use.using():
            if not write:
                with self._transaction(write) as tx:
                    yield tx
                return
            with self._write_lock(), self._transaction(write) as tx:
                yield tx

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """This process's writer lock, then the one shared with our other processes: both
        within the lock timeout, else :class:`~metallica.storage.errors.StorageBusy`."""
        timeout = self._busy_timeout_ms / 1000
        started = time.monotonic()
        if not self._writer.acquire(timeout=timeout):
            raise errors.StorageBusy("another transaction kept the database's write lock")
        try:
            left = max(0.0, timeout - (time.monotonic() - started))
            if not self._writers.acquire(left):
                raise errors.StorageBusy("another process kept the database's write lock")
            try:
                yield
            finally:
                self._writers.release()
        finally:
            self._writer.release()

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[SQLiteTransaction]:
        pooled = self._pool.get()
        connection: sqlite3.Connection | None = None
        try:
            connection = pooled if pooled is not None else self._connect()
            with _translated_errors():
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield SQLiteTransaction(connection, self._queries)
            with _translated_errors():
                connection.execute("COMMIT")
        finally:
            if connection is not None:
                try:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                except sqlite3.Error:
                    self._discard(connection)
                    connection = None
            if connection is not None and self._in_use.closed:
                self._discard(connection)  # closed while we used it: we close it, nobody else
                connection = None  # its slot stays, for a transaction that began before
            self._pool.put(connection)

    @contextlib.asynccontextmanager
    async def listen(self, channel_prefix: str) -> AsyncIterator[AsyncIterator[None]]:
        """No notifications on SQLite: an iterator that never yields (readers poll)."""

        async def never() -> AsyncIterator[None]:
            await asyncio.Event().wait()
            yield None  # pragma: no cover - never reached

        yield never()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Refuse new transactions, wait for those under way (``timeout`` seconds at most),
        close the idle connections; :class:`~metallica.storage.errors.StillInUse` if a
        transaction outlived the wait (its connection is closed by its thread, when it ends)."""
        try:
            self._in_use.close(timeout)
        finally:
            while True:
                try:
                    connection = self._pool.get_nowait()
                except queue.Empty:
                    break
                if connection is not None:
                    self._discard(connection)
            if self._in_use.count == 0:  # else the transaction still under way holds it
                self._writers.close()
