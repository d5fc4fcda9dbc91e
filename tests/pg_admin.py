"""Administrative PostgreSQL helpers for tests: create, drop and disconnect databases."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict


def admin_connection(server_url: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection for CREATE/DROP DATABASE and pg_terminate_backend."""
    return psycopg.connect(server_url, autocommit=True, connect_timeout=10)


def with_database(url: str, dbname: str) -> str:
    """The same libpq URL, pointing at another database."""
    parts = urlsplit(url)
    query = urlencode([(key, value) for key, value in parse_qsl(parts.query) if key != "dbname"])
    return f"{parts.scheme}://{parts.netloc}/{dbname}" + (f"?{query}" if query else "")


def database_name(url: str) -> str:
    """The database a libpq URL names."""
    return str(conninfo_to_dict(url)["dbname"])


def create_database(server_url: str) -> str:
    """Create a fresh, uniquely named database; return its name."""
    dbname = f"t_{uuid.uuid4().hex[:12]}"
    with admin_connection(server_url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return dbname


def terminate_backends(server_url: str, dbname: str, *, wait: float = 10.0) -> int:
    """Kill every other connection to a database, wait until they are gone; return how many."""
    with admin_connection(server_url) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            left = admin.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchone()
            if left is not None and left[0] == 0:
                break
            time.sleep(0.01)
        else:
            raise TimeoutError(f"connections to {dbname} survived pg_terminate_backend")
    return len(rows)


def drop_database(server_url: str, dbname: str) -> None:
    """Disconnect everyone from a database and drop it; errors are ignored (best effort)."""
    try:
        with admin_connection(server_url) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
    except psycopg.Error:
        pass
