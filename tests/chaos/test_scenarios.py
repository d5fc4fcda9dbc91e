"""The brief's failure modes, as scenarios with real processes and fault proxies.

Each scenario runs on SQLite and on PostgreSQL, with 1 replica and with 3 replicas of every
service. One lab (one stack) serves all scenarios of a variant, in order, as `metallica
scenarios run` does; each test then asserts its scenario's own checks and the invariant
checker's report. The 3-replica PostgreSQL variant is the slowest and is marked `slow`; CI runs
it all the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from metallica.lab.harness import Lab, LabConfig
from metallica.lab.scenarios import FAULT_SCENARIOS, SCENARIOS, run_scenario
from metallica.load.pg_cluster import ThrowawayCluster
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


@pytest.fixture(scope="module", params=VARIANTS)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
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
        cluster: ThrowawayCluster | None = request.getfixturevalue("restartable_cluster")
        config = LabConfig(
            replicas=replicas, database_urls=urls, cluster=cluster, log_level="DEBUG"
        )
    with Lab(config, tmp_path_factory.mktemp(f"lab-{backend}-{replicas}")) as running:
        yield running
    for dbname in created:
        drop_database(server_url, dbname)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", FAULT_SCENARIOS)
def test_scenario(lab: Lab, name: str) -> None:
    result = run_scenario(lab, SCENARIOS[name])

    assert result.error is None, result.error
    failed = [f"{check.name}: {check.detail}" for check in result.checks if not check.ok]
    assert not failed, failed
    assert result.report is not None
    assert result.report.ok, "\n".join(str(violation) for violation in result.report.violations)
    assert result.records, "the scenario sent no command"
    assert_no_secret_in_any_log_line(lab)


def assert_no_secret_in_any_log_line(lab: Lab) -> None:
    """The services log at DEBUG: after each scenario, no password a client was told so far,
    no token, no key of the generator, in any line any service wrote so far (the last
    scenario of a variant reads everything the variant logged)."""
    secrets = lab.secrets()
    assert len(secrets) >= 3, "no token or key to look for"
    logs = lab.logs()
    assert logs, "no log to read"
    leaks = [
        f"{path.name}: a secret of {len(secret)} characters"
        for path, text in logs.items()
        for secret in secrets
        if secret in text
    ]
    assert not leaks, leaks
