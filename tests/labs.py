"""The labs the scenario tests run on: one stack per variant (backend x replicas), in order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from metallica.lab.harness import Lab, LabConfig
from tests.pg_admin import create_database, drop_database, with_database

VARIANTS = [
    pytest.param(("sqlite", 1), id="sqlite-1", marks=pytest.mark.xdist_group("sqlite-1")),
    pytest.param(("sqlite", 3), id="sqlite-3", marks=pytest.mark.xdist_group("sqlite-3")),
    pytest.param(
        ("postgres", 1),
        id="postgres-1",
        marks=[pytest.mark.postgres, pytest.mark.xdist_group("postgres-1")],
    ),
    pytest.param(
        ("postgres", 3),
        id="postgres-3",
        marks=[pytest.mark.postgres, pytest.mark.slow, pytest.mark.xdist_group("postgres-3")],
    ),
]


@contextmanager
def variant_lab(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    restartable: bool = True,
) -> Iterator[Lab]:
    """A lab for ``request.param`` (a backend and a replica count), on fresh databases;
    ``restartable``: the lab may restart the PostgreSQL cluster (when it is ours)."""
    backend, replicas = request.param
    config = LabConfig(replicas=replicas, log_level="DEBUG")
    created: list[str] = []
    server_url = ""
    if backend == "postgres":
        server_url = request.getfixturevalue("postgres_server_url")
        urls = {}
        for service in ("protools", "generator", "mailer"):
            created.append(create_database(server_url))
            urls[service] = with_database(server_url, created[-1])
        cluster = request.getfixturevalue("restartable_cluster") if restartable else None
        config = LabConfig(
            replicas=replicas, database_urls=urls, cluster=cluster, log_level="DEBUG"
        )
    try:
        with Lab(config, tmp_path_factory.mktemp(f"lab-{backend}-{replicas}")) as running:
            yield running
    finally:
        for dbname in created:
            drop_database(server_url, dbname)
