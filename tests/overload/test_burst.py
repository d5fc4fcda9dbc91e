"""A burst on idle replicas is queued, never refused: every backend and replica count.

60 commands at the same instant (30 usernames, two keys each), each willing to wait 10 s. This
runs alone, after the parallel suite, like the overload scenarios beside it: "idle replicas"
means an idle machine too. With other tests busy on the two cores, the commands reach the
admission queue spread over protools' own busy event loop while its adaptive limit stays near
its floor, the queue grows for longer than CoDel's interval, and shedding it is then right.
Each variant starts a lab of its own, so the replicas have served nothing before the burst.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from metallica.lab.harness import Lab
from metallica.lab.scenarios import SCENARIOS, run_scenario
from metallica.load.records import OK
from tests.labs import VARIANTS, variant_lab

pytestmark = pytest.mark.slow


WARM_UP = 3  # workflows each protools replica serves, one at a time, before the burst


@pytest.fixture(params=VARIANTS)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A fresh lab whose replicas have each served a few workflows, one at a time, and are idle:
    a replica's first requests pay for what it loads and connects on first use (CI saw 22 of
    60 refused on just-started replicas), which is a cold start, not a burst on idle replicas."""
    with variant_lab(request, tmp_path_factory, restartable=False) as running:
        for replica in range(running.replicas):
            for turn in range(WARM_UP):
                record = running.submit(f"warm{replica}x{turn}", replica=replica, wait=30)
                assert record.told == OK, record
        yield running


@pytest.mark.timeout(300)
def test_a_burst_on_idle_replicas_is_queued_not_refused(lab: Lab) -> None:
    result = run_scenario(lab, SCENARIOS["burst"])

    assert result.error is None, result.error
    failed = [f"{check.name}: {check.detail}" for check in result.checks if not check.ok]
    assert not failed, failed
    assert result.report is not None
    assert result.report.ok, "\n".join(str(violation) for violation in result.report.violations)
    assert len(result.records) == 60
