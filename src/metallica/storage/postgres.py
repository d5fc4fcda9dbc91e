"""PostgreSQL adapter: psycopg 3 with a connection pool.

A connection is not checked before each use (that would be a round trip per transaction): one
found dead at BEGIN is dropped and the next one tried; one that dies mid-transaction fails it
with StorageUnavailable (callers retry) and the pool checks its idle connections at once. So a
service reconnects by itself after a server restart.
Transactions run at READ COMMITTED; concurrency control is in the SQL (unique constraints,
``FOR UPDATE SKIP LOCKED``, advisory locks).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
import psycopg.sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from metallica.storage import errors
from metallica.storage.closing import CLOSE_TIMEOUT, InUse
from metallica.storage.ports import DEFAULT_TIMEOUTS, Answered, Row, Sent, Timeouts
from metallica.storage.queries import identifier, load_queries

# Every migrator takes this advisory lock, so replicas that start together migrate one by one.
MIGRATION_LOCK_ID = 0x6D65_7461_6C6C


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Turn psycopg's exceptions into :mod:`metallica.storage.errors`."""
    try:
        yield
    except psycopg.errors.UniqueViolation as error:
        raise errors.UniqueViolation(error.diag.constraint_name or "unknown") from error
    except psycopg.errors.LockNotAvailable as error:
        raise errors.LockTimeout(type(error).__name__) from error
    except (
        psycopg.errors.SerializationFailure,
        psycopg.errors.DeadlockDetected,
        psycopg.errors.QueryCanceled,  # statement_timeout
    ) as error:
        raise errors.StorageBusy(type(error).__name__) from error
    except (psycopg.OperationalError, PoolTimeout) as error:
        raise errors.StorageUnavailable(type(error).__name__) from error
    except psycopg.Error as error:
        raise errors.StorageError(type(error).__name__) from error


class PostgresTransaction:
    """A transaction on one pooled connection; with ``pipeline``, in psycopg's pipeline mode."""

    def __init__(
        self,
        cursor: psycopg.Cursor[Row],
        queries: dict[str, str],
        pipeline: psycopg.Pipeline | None = None,
    ) -> None:
        self._cursor = cursor
        self._queries = queries
        self._pipeline = pipeline
        self._unanswered = False  # statements sent whose answers have not been read
        self._confirmed = pipeline is None  # a round trip of this transaction succeeded

    def send(self, query: str, /, **params: Any) -> Sent:
        if self._pipeline is None:
            with _translated_errors():
                self._cursor.execute(self._queries[query], params)
                rows = self._cursor.fetchall() if self._cursor.description else []
            return Answered(rows, self._cursor.rowcount)
        cursor = self._cursor.connection.cursor()  # its own: it keeps its answer
        with self._talking():
            cursor.execute(self._queries[query], params)  # queued, not waited for
        self._unanswered = True
        return _Pending(self, cursor)

    def begin(self) -> None:
        """Send BEGIN (pipelined: it travels with the first statements)."""
        with self._talking():
            self._cursor.execute(b"BEGIN")
        self._unanswered = True

    def flush(self) -> None:
        if self._pipeline is None or not self._unanswered:
            return
        self._unanswered = False
        with self._talking():
            self._pipeline.sync()
        self._confirmed = True

    @contextmanager
    def _talking(self) -> Iterator[None]:
        """Errors translated; a lost connection before any answer came back is stale: it died
        in the pool, and nothing this transaction sent was done."""
        try:
            with _translated_errors():
                yield
        except errors.StorageUnavailable as error:
            if not self._confirmed:
                raise errors.StaleConnection(str(error)) from error
            raise

    def execute(self, query: str, /, **params: Any) -> int:
        if self._pipeline is not None:
            return self.send(query, **params).count()
        with _translated_errors():
            self._cursor.execute(self._queries[query], params)
        return self._cursor.rowcount

    def fetch_one(self, query: str, /, **params: Any) -> Row | None:
        if self._pipeline is not None:
            return self.send(query, **params).row()
        with _translated_errors():
            self._cursor.execute(self._queries[query], params)
            return self._cursor.fetchone()

    def fetch_all(self, query: str, /, **params: Any) -> list[Row]:
        if self._pipeline is not None:
            return self.send(query, **params).rows()
        with _translated_errors():
            self._cursor.execute(self._queries[query], params)
            return self._cursor.fetchall()

    def run_script(self, sql: str, /) -> None:
        with _translated_errors():
            self._cursor.execute(sql.encode())

    def copy_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], /
    ) -> int:
        statement = psycopg.sql.SQL("COPY {} ({}) FROM STDIN").format(
            psycopg.sql.Identifier(identifier(table)),
            psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(identifier(c)) for c in columns),
        )
        count = 0
        with _translated_errors(), self._cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count

    def lock_migrations(self) -> None:
        with _translated_errors():
            # Migrators wait for each other, and a migration may run long: no timeouts here.
            self._cursor.execute("SET LOCAL lock_timeout = 0")
            self._cursor.execute("SET LOCAL statement_timeout = 0")
            self._cursor.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))


class _Pending:
    """A statement sent in a pipelined transaction, its answer read after the next flush."""

    def __init__(self, transaction: PostgresTransaction, cursor: psycopg.Cursor[Row]) -> None:
        self._transaction = transaction
        self._cursor = cursor

    def row(self) -> Row | None:
        self._transaction.flush()
        with _translated_errors():
            return self._cursor.fetchone() if self._cursor.description else None

    def rows(self) -> list[Row]:
        self._transaction.flush()
        with _translated_errors():
            return self._cursor.fetchall() if self._cursor.description else []

    def count(self) -> int:
        self._transaction.flush()
        return self._cursor.rowcount


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database."""

    dialect = "postgres"
    listens = True

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        pool_size: int = 8,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        open_timeout: float = 10.0,
    ) -> None:
        self.schema = schema
        self._url = with_timeouts(url, timeouts)
        self._queries = load_queries(self.dialect, schema)
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            self._url,
            min_size=1,
            max_size=pool_size,
            kwargs={"row_factory": dict_row, "connect_timeout": 5},
            timeout=10,
            reconnect_timeout=3600,
            open=False,
        )
        self._in_use = InUse()
        try:
            self._pool.open(wait=True, timeout=open_timeout)
        except PoolTimeout:
            self._pool.close()
            raise errors.StorageUnavailable(_why_unreachable(url)) from None

    @contextmanager
    def transaction(
        self, *, write: bool = True, pipeline: bool = False
    ) -> Iterator[PostgresTransaction]:
        if pipeline:
            with self._in_use.using(), self._pipelined() as tx:
                yield tx
            return
        with self._in_use.using(), self._transaction(write) as tx:
            yield tx

    @contextmanager
    def _pipelined(self) -> Iterator[PostgresTransaction]:
        """A write transaction in pipeline mode: BEGIN travels with the first statements, and
        COMMIT costs one round trip. The transaction is spelled out (``BEGIN``, ``COMMIT``, on
        a connection in autocommit) rather than psycopg's, which waits for the server at BEGIN
        and three times at COMMIT in pipeline mode."""
        try:
            with _translated_errors():
                connection = self._pool.getconn()
                try:
                    connection.autocommit = True
                    with connection.pipeline() as pipeline, connection.cursor() as cursor:
                        tx = PostgresTransaction(cursor, self._queries, pipeline)
                        try:
                            tx.begin()
                            yield tx
                            cursor.execute(b"COMMIT")
                            pipeline.sync()
                        except BaseException:
                            _roll_back(connection, cursor, pipeline)
                            raise
                finally:
                    if not connection.closed and not connection.broken:
                        with contextlib.suppress(psycopg.Error):
                            connection.autocommit = False
                    self._pool.putconn(connection)  # a broken one is dropped, not reused
        except errors.StorageUnavailable:
            with contextlib.suppress(Exception):
                self._pool.check()  # as in _transaction: the server may have restarted
            raise

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[PostgresTransaction]:
        try:
            with _translated_errors():
                connection, transaction = self._begin(write)
                try:
                    with connection.cursor() as cursor:
                        yield PostgresTransaction(cursor, self._queries)
                except BaseException as error:
                    transaction.__exit__(type(error), error, error.__traceback__)  # ROLLBACK
                    raise
                else:
                    transaction.__exit__(None, None, None)  # COMMIT
                finally:
                    if not write and not connection.closed:
                        connection.read_only = False
                    self._pool.putconn(connection)  # a broken one is dropped, not reused
        except errors.StorageUnavailable:
            # The server went away (a restart leaves every pooled connection dead): check the
            # idle ones now, so the next transactions get live connections.
            with contextlib.suppress(Exception):
                self._pool.check()
            raise

    def _begin(
        self, write: bool
    ) -> tuple[psycopg.Connection[Row], contextlib.AbstractContextManager[psycopg.Transaction]]:
        """A pooled connection in a new transaction. A connection found dead at BEGIN (the
        server closed it while it sat in the pool) is dropped and the next one tried: nothing
        was done on it, so nobody need know. No check before each use: that is a round trip."""
        for _ in range(self._pool.max_size):
            connection = self._pool.getconn()
            try:
                connection.read_only = not write
                transaction = connection.transaction()
                transaction.__enter__()  # BEGIN
            except psycopg.OperationalError:
                self._pool.putconn(connection)
                continue
            return connection, transaction
        connection = self._pool.getconn()  # the last try: its failure is the answer
        try:
            connection.read_only = not write
            transaction = connection.transaction()
            transaction.__enter__()
        except BaseException:
            self._pool.putconn(connection)
            raise
        return connection, transaction

    @contextlib.asynccontextmanager
    async def listen(self, channel_prefix: str) -> AsyncIterator[AsyncIterator[None]]:
        """``LISTEN`` on the channel ``channel_prefix`` + the schema the queries run in (its
        ``current_schema()``, as the notifier names it), on an async connection of its own,
        closed when the block ends."""
        async with await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=5
        ) as connection:
            with _translated_errors():
                cursor = await connection.execute("SELECT current_schema()")
                row = await cursor.fetchone()
                assert row is not None
                channel = psycopg.sql.Identifier(channel_prefix + str(row[0]))
                await connection.execute(psycopg.sql.SQL("LISTEN {}").format(channel))

            async def notified() -> AsyncIterator[None]:
                with _translated_errors():
                    async for _ in connection.notifies():
                        yield None

            yield notified()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Refuse new transactions, wait for those under way (``timeout`` seconds at most),
        close the pool; :class:`~metallica.storage.errors.StillInUse` if a transaction
        outlived the wait (the pool closes its connection when it is given back)."""
        try:
            self._in_use.close(timeout)
        finally:
            self._pool.close()


def _roll_back(
    connection: psycopg.Connection[Row], cursor: psycopg.Cursor[Row], pipeline: psycopg.Pipeline
) -> None:
    """End a pipelined transaction that failed: collect what is still in flight (its errors
    are the failure's echo), then ROLLBACK. A connection this cannot clean is closed, so the
    pool drops it."""
    try:
        with contextlib.suppress(psycopg.Error):
            pipeline.sync()
        cursor.execute(b"ROLLBACK")
        pipeline.sync()
    except psycopg.Error:
        connection.close()


def with_timeouts(url: str, timeouts: Timeouts) -> str:
    """``url`` with the session's lock, statement and idle-in-transaction timeouts added to its
    ``options`` (kept: a ``search_path`` already there)."""
    params = conninfo_to_dict(url)
    settings = {
        "lock_timeout": timeouts.lock,
        "statement_timeout": timeouts.statement,
        "idle_in_transaction_session_timeout": timeouts.idle_in_transaction,
    }
    extra = " ".join(f"-c {name}={round(seconds * 1000)}" for name, seconds in settings.items())
    params["options"] = f"{params.get('options', '')} {extra}".strip()
    return make_conninfo("", **params)


def schema_url(url: str, schema: str) -> str:
    """``url`` with its ``search_path`` set to ``schema`` (one database, a schema per service)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


def ensure_schema(url: str, schema: str) -> None:
    """Create ``schema`` in the database of ``url`` if it does not exist."""
    with (
        _translated_errors(),
        psycopg.connect(url, autocommit=True, connect_timeout=5) as connection,
    ):
        connection.execute(
            psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(psycopg.sql.Identifier(schema))
        )


def drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it (the fault lab's per-run schemas)."""
    with (
        _translated_errors(),
        psycopg.connect(url, autocommit=True, connect_timeout=5) as connection,
    ):
        connection.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psycopg.sql.Identifier(schema)
            )
        )


def _why_unreachable(url: str) -> str:
    """Why a pool could not open its first connection, in the driver's words (the pool only
    says it timed out): one direct try, on the failure path only. The URL's password is not
    part of the driver's message."""
    try:
        psycopg.connect(url, autocommit=True, connect_timeout=2).close()
    except psycopg.Error as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return "cannot connect to the database: " + (lines[0] if lines else type(error).__name__)
    return "the database did not answer in time"
