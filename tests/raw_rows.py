"""A store's rows read with the driver itself, every column: what an attacker with a copy of
the database would see."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The tables that could hold a secret, by schema.
TABLES = {
    "generator": ("passwords", "commands"),
    "protools": ("events", "outbox", "commands"),
}


def raw_rows(url: str, tables: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Every row of ``tables``, by table."""
    if url.startswith("postgres"):
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as connection:
            return {t: connection.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
    import sqlite3

    from metallica.storage.sqlite import path_from_url

    lite = sqlite3.connect(path_from_url(url))
    lite.row_factory = sqlite3.Row
    try:
        return {t: [dict(row) for row in lite.execute(f"SELECT * FROM {t}")] for t in tables}
    finally:
        lite.close()


def assert_nowhere(secret: str, url: str, tables: Sequence[str], *, files: bool = True) -> None:
    """``secret`` is in no column of no row of ``tables``, as text or bytes (nor, on SQLite
    and with ``files``, anywhere in the database's files, its WAL included)."""
    for table, rows in raw_rows(url, tables).items():
        for row in rows:
            for column, value in row.items():
                if isinstance(value, bytes | memoryview):
                    assert secret.encode() not in bytes(value), (table, column)
                else:
                    assert secret not in str(value), (table, column)
    if not url.startswith("postgres") and files:
        from metallica.storage.sqlite import path_from_url

        database = path_from_url(url)
        for path in database.parent.glob(database.name + "*"):
            assert secret.encode() not in path.read_bytes(), path.name
