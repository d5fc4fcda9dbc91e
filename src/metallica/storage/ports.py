"""The storage interface every service codes against, whatever the backend.

A :class:`Database` hands out :class:`Transaction` objects; a transaction runs *named* queries,
loaded from ``sql/queries/<schema>.sql`` (written once for both dialects). Repositories (event
store, outbox, command store, password store) are written once against this interface; each
backend differs only in its migrations, a few catalog queries and the few methods below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from metallica.config import default

Row = dict[str, Any]


@dataclass(frozen=True)
class Timeouts:
    """How long a statement may wait, so that no request pins a connection without limit.

    ``lock``: waiting for a lock another transaction holds (PostgreSQL ``lock_timeout``,
    SQLite ``busy_timeout``); keep it under the callers' call timeout, so a retry that meets
    its first attempt's open transaction answers "in progress" before its caller gives up.
    ``statement`` and ``idle_in_transaction``: PostgreSQL's limits on one statement and on a
    transaction left open by a stuck holder (its session is closed and its locks released).
    """

    lock: float = default("db-lock-timeout")
    statement: float = default("db-statement-timeout")
    idle_in_transaction: float = default("db-idle-timeout")


class Sent(Protocol):
    """The answer to a statement sent with :meth:`Transaction.send`. Reading it waits for it
    (a pipelined transaction flushes first), and raises the statement's error, if it failed."""

    def row(self) -> Row | None:
        """The first row it returned, or None."""

    def rows(self) -> list[Row]:
        """Every row it returned."""

    def count(self) -> int:
        """The number of rows it changed."""


@dataclass(frozen=True)
class Answered:
    """A :class:`Sent` whose answer is already in (a statement that ran at once)."""

    answer: list[Row]
    changed: int

    def row(self) -> Row | None:
        return self.answer[0] if self.answer else None

    def rows(self) -> list[Row]:
        return self.answer

    def count(self) -> int:
        return self.changed


class Transaction(Protocol):
    """One database transaction: everything done through it commits or rolls back together."""

    def send(self, query: str, /, **params: Any) -> Sent:
        """Run a named query without waiting for its answer, where the transaction is
        pipelined (PostgreSQL, ``Database.transaction(pipeline=True)``): the statements sent
        one after the other travel to the server together, and their answers come back
        together, in one round trip, at :meth:`flush`. Elsewhere the query runs at once. Its
        answer is read from the :class:`Sent` it returns."""

    def flush(self) -> None:
        """Wait for the answers to every statement sent; raise the first one's error."""

    def execute(self, query: str, /, **params: Any) -> int:
        """Run a named query; return the number of rows it changed."""

    def fetch_one(self, query: str, /, **params: Any) -> Row | None:
        """Run a named query; return its first row, or None."""

    def fetch_all(self, query: str, /, **params: Any) -> list[Row]:
        """Run a named query; return all its rows."""

    def run_script(self, sql: str, /) -> None:
        """Run a multi-statement script without parameters (migrations)."""

    def copy_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], /
    ) -> int:
        """Insert many rows at once, the backend's fastest way (PostgreSQL ``COPY``); return
        how many. Names are plain identifiers; the values are passed as data."""

    def lock_migrations(self) -> None:
        """Serialize concurrent migrators until this transaction ends."""


class Database(Protocol):
    """A connection pool to one service's database."""

    dialect: str
    schema: str
    # Whether :meth:`listen` gives notifications (PostgreSQL) or none ever come (SQLite: poll).
    listens: bool

    def transaction(
        self, *, write: bool = True, pipeline: bool = False
    ) -> AbstractContextManager[Transaction]:
        """Open a transaction; ``write=False`` for read-only work. ``pipeline``: statements
        :meth:`~Transaction.send` sends wait for their answers together (where the backend
        can: PostgreSQL's pipeline mode); a pipelined transaction that finds its pooled
        connection dead raises :class:`~metallica.storage.errors.StaleConnection` at its
        first flush, and may be run again."""

    def listen(self, channel_prefix: str) -> AbstractAsyncContextManager[AsyncIterator[None]]:
        """The notifications sent on this schema's channel (``channel_prefix`` and the schema's
        name), one item each, on a connection of its own until the block ends; never any item
        where :attr:`listens` is false."""

    def close(self, timeout: float = ...) -> None:
        """Refuse new transactions, wait at most ``timeout`` seconds for those under way, then
        close every connection; never one still in use (:mod:`metallica.storage.closing`)."""


DEFAULT_TIMEOUTS = Timeouts()
