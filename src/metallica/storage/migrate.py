"""Versioned migrations: numbered ``.sql`` files per dialect and service schema.

Each file runs in its own transaction, recorded in ``schema_migrations``. Migrators serialize
on a lock (PostgreSQL: an advisory lock; SQLite: the write lock of ``BEGIN IMMEDIATE``), and each
re-checks what is applied once it holds the lock, so replicas that start together are safe.
Shipped files are never edited: a change is a new file.

The policy (README, "Migrations"): ``metallica migrate SERVICE`` is the deployment step; a
service starts only on the schema version it knows (:func:`check_at_start`). By default it
applies what is missing itself as it starts (``METALLICA_MIGRATE_AT_START``, on: what ``up``,
the demo and a single replica want); off, it refuses a schema older than it knows. It never
starts on a schema newer than it knows: that is older code started over a newer schema (a
rollback), whose queries may no longer fit.
"""

from __future__ import annotations

import logging

from metallica.storage.errors import SchemaTooNew, SchemaTooOld
from metallica.storage.ports import Database, Transaction
from metallica.storage.queries import migration_files

logger = logging.getLogger(__name__)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""


def _applied(tx: Transaction) -> set[int]:
    tx.run_script(_CREATE_TABLE)
    return {row["version"] for row in tx.fetch_all("applied_migrations")}


def migrate(database: Database) -> list[int]:
    """Apply every migration not yet applied; return the versions this call applied."""
    applied_now: list[int] = []
    for version, name, sql in migration_files(database.dialect, database.schema):
        with database.transaction() as tx:
            tx.lock_migrations()
            if version in _applied(tx):
                continue
            tx.run_script(sql)
            tx.execute("record_migration", version=version, name=name)
        logger.info("metallica.migration_applied", extra={"version": version, "migration": name})
        applied_now.append(version)
    return applied_now


def latest_version(database: Database) -> int:
    """The version of the newest migration this code ships."""
    return max(version for version, _, _ in migration_files(database.dialect, database.schema))


def current_version(database: Database) -> int:
    """The newest migration applied to the database (0: none)."""
    with database.transaction(write=False) as tx:
        rows = tx.fetch_all("applied_migrations") if _table_exists(tx) else []
    return max((row["version"] for row in rows), default=0)


def verify(database: Database) -> None:
    """Refuse to run against a schema older than this code expects."""
    current = current_version(database)
    if current < latest_version(database):
        raise SchemaTooOld(
            f"schema {database.schema!r} is at version {current}, this code needs "
            f"{latest_version(database)}: run `metallica migrate {database.schema}`"
        )


def refuse_newer(database: Database) -> None:
    """Refuse to run against a schema newer than this code knows."""
    current = current_version(database)
    if current > latest_version(database):
        raise SchemaTooNew(
            f"schema {database.schema!r} is at version {current}, newer than this code knows "
            f"({latest_version(database)}): start the release that migrated it"
        )


def check_at_start(database: Database, *, migrate_at_start: bool) -> list[int]:
    """What a starting service does: refuse a schema newer than it knows, then apply what is
    missing (``migrate_at_start``) or refuse a schema older than it knows. Returns the
    versions applied."""
    refuse_newer(database)
    if migrate_at_start:
        return migrate(database)
    verify(database)
    return []


def _table_exists(tx: Transaction) -> bool:
    return tx.fetch_one("migrations_table_exists") is not None
