"""Named SQL queries, written once for both dialects, read once per dialect.

``sql/queries/<schema>.sql`` holds a service schema's queries, ``sql/<dialect>/common.sql`` the
few that ask each database's own catalog. A file is a list of blocks, each starting with a
``-- name: <query_name>`` line, then comment lines describing it, then the SQL (procrastinate's
``sql/queries.sql`` layout).

Queries take ``:name`` parameters (PostgreSQL's psycopg gets them as ``%(name)s``) and name the
places where the dialects differ, as ``{fragment}``: :data:`FRAGMENTS` says what each becomes.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")  # not a ::cast, not a time
_FRAGMENT = re.compile(r"\{([a-z_]+)\}")

# What each dialect difference is, by name.
FRAGMENTS: dict[str, dict[str, str]] = {
    "sqlite": {
        # The database's clock in Unix seconds, to the millisecond.
        "now": "((julianday('now') - 2440587.5) * 86400.0)",
        # BEGIN IMMEDIATE already holds the only write lock.
        "for_update": "",
        "skip_locked": "",
        # The ids in a JSON array parameter.
        "ids_from_json": "SELECT value FROM json_each(:ids)",
        # The strings in a JSON array parameter.
        "strings_from_json": "SELECT value FROM json_each(:strings)",
        # The new events of an append: [type, data, schema version] each, n from 0.
        "events_from_json": (
            "SELECT key AS n, json_extract(value, '$[0]') AS type, "
            "json_extract(value, '$[1]') AS data, json_extract(value, '$[2]') AS schema_version "
            "FROM json_each(:events)"
        ),
        # The client a start event records (the expression its index is on).
        "started_by": "json_extract(s.data, '$.client')",
        # The input a start event records, as JSON text.
        "start_input": "COALESCE(json_extract(s.data, '$.input'), json_object())",
        # The log's turn: BEGIN IMMEDIATE already holds the only write lock.
        "log_turn": "1 AS turn",
        # No server to notify: SQLite's followers poll.
        "log_notify": "1",
        "oldest_write_age": "0.0",
    },
    "postgres": {
        "now": "extract(epoch FROM clock_timestamp())::double precision",
        "for_update": "FOR UPDATE",
        "skip_locked": "FOR UPDATE SKIP LOCKED",
        "ids_from_json": "SELECT json_array_elements_text(CAST(:ids AS json))::bigint",
        "strings_from_json": "SELECT json_array_elements_text(CAST(:strings AS json))",
        "events_from_json": (
            "SELECT CAST(x.n - 1 AS integer) AS n, x.value ->> 0 AS type, x.value ->> 1 AS data, "
            "CAST(x.value ->> 2 AS integer) AS schema_version "
            "FROM json_array_elements(CAST(:events AS json)) WITH ORDINALITY AS x(value, n)"
        ),
        "started_by": "((CAST(s.data AS jsonb)) ->> 'client')",
        "start_input": (
            "COALESCE(CAST((CAST(s.data AS jsonb)) -> 'input' AS text), "
            "CAST(jsonb_build_object() AS text))"
        ),
        # The log's turn: a transaction-scoped advisory lock per schema (writers of the log
        # commit one at a time).
        "log_turn": "pg_advisory_xact_lock(1835822951, hashtext(current_schema())) AS turn",
        # A notification to the log's followers on every replica (sent after commits, apart).
        "log_notify": "pg_notify('metallica_log_' || current_schema(), '')",
        "oldest_write_age": (
            "COALESCE((SELECT extract(epoch FROM clock_timestamp() - min(xact_start))"
            "::double precision FROM pg_stat_activity"
            " WHERE datname = current_database() AND backend_xid IS NOT NULL), 0.0)"
        ),
    },
}


def render(sql: str, dialect: str) -> str:
    """``sql`` for ``dialect``: its fragments filled in, its parameters in the driver's style."""
    fragments = FRAGMENTS[dialect]
    sql = _FRAGMENT.sub(lambda match: fragments[match[1]], sql)
    if dialect == "postgres":
        sql = _PARAMETER.sub(r"%(\1)s", sql)
    return sql


def parse_queries(text: str) -> dict[str, str]:
    """Split a queries file into ``{name: sql}``; comment lines are dropped."""
    queries: dict[str, str] = {}
    headers = list(_HEADER.finditer(text))
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        body = text[header.end() : following.start() if following else len(text)]
        sql = "\n".join(
            line for line in body.splitlines() if not line.lstrip().startswith("--")
        ).strip()
        if header["name"] in queries:
            raise ValueError(f"query {header['name']!r} is defined twice")
        queries[header["name"]] = sql.rstrip(";")
    return queries


@functools.cache
def load_queries(dialect: str, schema: str) -> dict[str, str]:
    """The named queries of one service schema for one SQL dialect, plus the common ones."""
    folder = resources.files("metallica.storage") / "sql"
    common = parse_queries((folder / dialect / "common.sql").read_text(encoding="utf-8"))
    own = parse_queries((folder / "queries" / f"{schema}.sql").read_text(encoding="utf-8"))
    return {name: render(sql, dialect) for name, sql in (common | own).items()}


def migration_files(dialect: str, schema: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration, in version order."""
    folder = resources.files("metallica.storage") / "sql" / dialect / schema / "migrations"
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found)


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def identifier(name: str) -> str:
    """``name`` if it is a plain lower-case SQL identifier, else ValueError (bulk inserts name
    their table and columns; nothing else may reach the SQL text)."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name
