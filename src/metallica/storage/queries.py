"""Named SQL queries, read once from ``sql/<dialect>/<schema>/queries.sql``.

The file is a list of blocks, each starting with a ``-- name: <query_name>`` line, then
comment lines describing it, then the SQL (procrastinate's ``sql/queries.sql`` layout).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


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
    folder = resources.files("metallica.storage") / "sql" / dialect
    common = parse_queries((folder / "common.sql").read_text(encoding="utf-8"))
    own = parse_queries((folder / schema / "queries.sql").read_text(encoding="utf-8"))
    return common | own


def migration_files(dialect: str, schema: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration, in version order."""
    folder = resources.files("metallica.storage") / "sql" / dialect / schema / "migrations"
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found)
