"""Storage: one interface (:mod:`.ports`), a SQLite and a PostgreSQL adapter, migrations."""

from __future__ import annotations

from metallica.storage.errors import (
    DatabaseClosed,
    LockTimeout,
    SchemaTooNew,
    SchemaTooOld,
    StaleConnection,
    StillInUse,
    StorageBusy,
    StorageError,
    StorageUnavailable,
    UniqueViolation,
    UnsupportedDatabaseUrl,
)
from metallica.storage.ports import Database, Row, Sent, Timeouts, Transaction


def check_url(url: str) -> str:
    """Return ``url`` if a backend supports it, else raise :class:`UnsupportedDatabaseUrl`."""
    if url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        return url
    raise UnsupportedDatabaseUrl()


def open_database(
    url: str,
    schema: str,
    *,
    pool_size: int = 8,
    timeouts: Timeouts | None = None,
    open_timeout: float = 10.0,
) -> Database:
    """Open the database of ``url`` for one service ``schema``; the scheme picks the backend.
    A server that gives no connection within ``open_timeout`` seconds raises
    :class:`StorageUnavailable`, saying why."""
    if url.startswith("sqlite:"):
        from metallica.storage.sqlite import SQLiteDatabase

        return SQLiteDatabase(url, schema, pool_size=pool_size, timeouts=timeouts or Timeouts())
    if url.startswith(("postgresql://", "postgres://")):
        from metallica.storage.postgres import PostgresDatabase

        return PostgresDatabase(
            url,
            schema,
            pool_size=pool_size,
            timeouts=timeouts or Timeouts(),
            open_timeout=open_timeout,
        )
    raise UnsupportedDatabaseUrl()


__all__ = [
    "Database",
    "DatabaseClosed",
    "LockTimeout",
    "Row",
    "SchemaTooNew",
    "SchemaTooOld",
    "Sent",
    "StaleConnection",
    "StillInUse",
    "StorageBusy",
    "StorageError",
    "StorageUnavailable",
    "Timeouts",
    "Transaction",
    "UniqueViolation",
    "UnsupportedDatabaseUrl",
    "check_url",
    "open_database",
]
