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

from metallica.lab.harness import Lab
from metallica.lab.scenarios import FAULT_SCENARIOS, SCENARIOS, run_scenario
from tests.labs import VARIANTS, variant_lab

# The burst scenario runs alone, after the parallel suite (tests/overload/test_burst.py): it
# holds idle replicas to "no refusal", which needs the machine idle too. Beside two other
# workers, the 60 commands reach protools' admission queue spread over its own busy event loop
# while the adaptive limit stays near its floor (4), and the queue grows for longer than
# CoDel's interval, which is what a standing queue is: CI saw 43 of 60 refused.
SCENARIOS_HERE = [name for name in FAULT_SCENARIOS if name != "burst"]


@pytest.fixture(scope="module", params=VARIANTS)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with variant_lab(request, tmp_path_factory) as running:
        yield running


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", SCENARIOS_HERE)
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
