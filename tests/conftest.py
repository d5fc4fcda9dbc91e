"""Fixtures every test may use: a clean environment, PostgreSQL, and fresh empty databases.

* Every ``METALLICA_*`` variable is removed at session start, so a developer's shell can't leak
  configuration into a test. ``METALLICA_TEST_POSTGRES_URL`` is read first: a libpq URL to a
  server where the tests may ``CREATE DATABASE``. Without it, the session starts a throwaway
  PostgreSQL cluster (:mod:`metallica.load.pg_cluster`) the first time a test needs one.
* ``backend`` runs a test once on SQLite and once on PostgreSQL (marked ``postgres``, so
  ``-m 'not postgres'`` runs without a server); ``database_url`` hands out fresh, empty
  databases on that backend and drops them afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metallica.load.pg_cluster import ThrowawayCluster
from tests.pg_admin import create_database, drop_database, with_database

POSTGRES_URL_VARIABLE = "METALLICA_TEST_POSTGRES_URL"
_external_postgres_url = pytest.StashKey[str | None]()

MakeUrl = Callable[[str], str]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Read the test server's URL, then drop every METALLICA_* variable (that one included)."""
    session.config.stash[_external_postgres_url] = os.environ.get(POSTGRES_URL_VARIABLE) or None
    for name in [name for name in os.environ if name.startswith("METALLICA_")]:
        del os.environ[name]


# --- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[ThrowawayCluster]:
    """A throwaway cluster this session controls (fault tests restart it).

    Started only when a test asks for it; fails loudly, never skips, when PostgreSQL is missing.
    """
    cluster = ThrowawayCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_server_url(request: pytest.FixtureRequest) -> str:
    """A libpq URL to a PostgreSQL server where the tests may CREATE DATABASE."""
    external = request.config.stash[_external_postgres_url]
    if external:
        return external
    cluster: ThrowawayCluster = request.getfixturevalue("postgres_cluster")
    return cluster.url


# --- fresh databases on each backend -------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend a test runs on: ``"sqlite"`` or ``"postgres"``."""
    name: str = request.param
    return name


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeUrl]:
    """``make_url(name)``: the URL of a fresh, empty database on ``backend``.

    The first call with a name creates the database; later calls with the same name return the
    same URL. PostgreSQL databases are dropped when the test ends.
    """
    urls: dict[str, str] = {}
    if backend == "sqlite":

        def make_sqlite_url(name: str) -> str:
            if name not in urls:
                urls[name] = f"sqlite:///{tmp_path}/{name}.db"
            return urls[name]

        yield make_sqlite_url
        return

    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r}")
    server_url: str = request.getfixturevalue("postgres_server_url")
    created: list[str] = []

    def make_postgres_url(name: str) -> str:
        if name not in urls:
            dbname = create_database(server_url)
            created.append(dbname)
            urls[name] = with_database(server_url, dbname)
        return urls[name]

    try:
        yield make_postgres_url
    finally:
        for dbname in created:
            drop_database(server_url, dbname)


@pytest.fixture(scope="session")
def restartable_cluster(request: pytest.FixtureRequest) -> ThrowawayCluster | None:
    """The cluster behind ``postgres_server_url`` when it is ours to restart; None otherwise."""
    if request.config.stash[_external_postgres_url]:
        return None
    cluster: ThrowawayCluster = request.getfixturevalue("postgres_cluster")
    return cluster
