"""Versioned migrations: numbered ``.sql`` files per dialect and service schema.

Each file runs in its own transaction, recorded in ``schema_migrations``. Migrators serialize
on a lock (PostgreSQL: an advisory lock; SQLite: the write lock of ``BEGIN IMMEDIATE``), and each
re-checks what is applied once it holds the lock, so replicas that start together are safe.
Shipped files are never edited: a change is a new file.
"""

from __future__ import annotations

import logging

from metallica.storage.errors import SchemaTooOld
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


def verify(database: Database) -> None:
    """Refuse to run against a schema older than this code expects."""
    with database.transaction(write=False) as tx:
        rows = tx.fetch_all("applied_migrations") if _table_exists(tx) else []
    current = max((row["version"] for row in rows), default=0)
    if current < latest_version(database):
        raise SchemaTooOld(
            f"schema {database.schema!r} is at version {current}, this code needs "
            f"{latest_version(database)}: run `metallica migrate {database.schema}`"
        )


def _table_exists(tx: Transaction) -> bool:
    return tx.fetch_one("migrations_table_exists") is not None
