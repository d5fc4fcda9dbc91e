"""The overload scenarios, on PostgreSQL with 2 replicas of every service, in one lab.

The lab's capacity C is measured first (once, shared by the four scenarios); each scenario then
asserts the invariant checker's report and its generous bounds, and prints its figures against
the issue's targets (the exact figures are for people: the machine is shared and noisy). This
directory runs after the rest of the suite, alone, so that no other test competes for the two
cores while it measures (see ``scripts/test``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from metallica.lab.harness import Lab, LabConfig
from metallica.lab.runner import render
from metallica.lab.scenarios import OVERLOAD_SCENARIOS, SCENARIOS, run_scenario
from tests.pg_admin import create_database, drop_database, with_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    created = [create_database(postgres_server_url) for _ in range(3)]
    urls = {
        service: with_database(postgres_server_url, name)
        for service, name in zip(("protools", "generator", "mailer"), created, strict=True)
    }
    config = LabConfig(replicas=2, database_urls=urls)
    try:
        with Lab(config, tmp_path_factory.mktemp("overload")) as running:
            yield running
    finally:
        for name in created:
            drop_database(postgres_server_url, name)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", OVERLOAD_SCENARIOS)
def test_overload_scenario(lab: Lab, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_scenario(lab, SCENARIOS[name])
    with capsys.disabled():
        print(f"\n{render([result])}")

    assert result.error is None, result.error
    failed = [f"{check.name}: {check.detail}" for check in result.checks if not check.ok]
    assert not failed, failed
    assert result.report is not None
    assert result.report.ok, "\n".join(str(violation) for violation in result.report.violations)
    assert result.records, "the scenario sent no command"
