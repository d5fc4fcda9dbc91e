"""Storage errors, translated from the drivers' own at the adapter edge."""

from __future__ import annotations

from metallica.errors import MetallicaError


class StorageError(MetallicaError):
    """The database failed."""

    code = "storage-error"
    status = 503
    title = "Storage error"


class StorageUnavailable(StorageError):
    """The database cannot be reached right now; retry later."""

    code = "storage-unavailable"


class StaleConnection(StorageUnavailable):
    """A pooled connection was found dead at its first round trip of a transaction: nothing of
    the transaction reached the database, so it may run again, whole, on another connection."""


class StorageBusy(StorageError):
    """The database is busy (lock timeout, serialization failure); retry later."""

    code = "storage-busy"


class LockTimeout(StorageBusy):
    """A lock stayed held by another transaction past the lock timeout; retry later."""

    code = "storage-lock-timeout"


class UniqueViolation(StorageError):
    """A unique constraint refused the write."""

    code = "unique-violation"

    def __init__(self, constraint: str) -> None:
        super().__init__(f"unique constraint {constraint!r} refused the write")
        self.constraint = constraint


class SchemaTooOld(StorageError):
    """The database schema is older than this code; run `metallica migrate`."""

    code = "schema-too-old"


class SchemaTooNew(StorageError):
    """The database schema is newer than this code (a rollback over a migration): start the
    code that knows it."""

    code = "schema-too-new"


class UnsupportedDatabaseUrl(MetallicaError):
    """METALLICA_DATABASE_URL must start with sqlite:/// or postgresql://."""

    code = "unsupported-database-url"
    status = 500


class DatabaseClosed(StorageError):
    """The database was closed: this process is shutting down."""

    code = "storage-closed"


class StillInUse(StorageError):
    """A database was closed while transactions still ran on it, past the wait for them."""

    code = "storage-still-in-use"
