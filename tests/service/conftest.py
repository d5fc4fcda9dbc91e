"""Service tests: each app in-process behind a ``TestClient``, on the test's backend."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.types import ASGIApp

from metallica.storage import Database, open_database
from metallica.storage.migrate import migrate

# Starlette 1.10 wants ``httpx2`` for its TestClient and warns (an error here) when it finds
# only ``httpx``; the client works the same. Test modules import TestClient from here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["TestClient"]

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROBLEM = "application/problem+json"


def headers(key: str | None = None, **extra: str) -> dict[str, str]:
    """The bearer token, and an Idempotency-Key when given."""
    return {**AUTH, **({} if key is None else {"Idempotency-Key": key}), **extra}


def problem_code(response: httpx.Response) -> str:
    """The problem+json code of an error answer (and check that it is one)."""
    assert response.headers["content-type"] == PROBLEM, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    return str(body["type"]).rsplit("/", 1)[-1]


@contextmanager
def migrated(url: str, schema: str) -> Iterator[Database]:
    """A migrated database on ``url``, closed afterwards."""
    database = open_database(url, schema, pool_size=2)
    try:
        migrate(database)
        yield database
    finally:
        database.close()


def count(url: str, schema: str, query: str) -> int:
    """The ``n`` of a counting query, read through a connection of our own."""
    database = open_database(url, schema, pool_size=1)
    try:
        with database.transaction(write=False) as tx:
            row = tx.fetch_one(query)
    finally:
        database.close()
    assert row is not None
    return int(row["n"])


@pytest.fixture
def start_app() -> Iterator[Callable[[ASGIApp], TestClient]]:
    """``start(app)``: a TestClient with the app's lifespan running until the test ends."""
    with ExitStack() as running:
        yield lambda app: running.enter_context(TestClient(app, raise_server_exceptions=False))
