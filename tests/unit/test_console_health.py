"""How the health view reads the board's reports (metallica.protools.console.health)."""

from __future__ import annotations

from metallica.protools import board
from metallica.protools.console.health import replica_row, with_this_one


def test_a_report_reads_as_a_row_with_its_breakers_and_refusals() -> None:
    report = {
        "ready": True,
        "admission": {"limit": 24, "in_flight": 3, "queued": 1},
        "refusals": {"queue-full": 2.0, "rate": 5.0},
        "guards": [
            {"service": "generator", "breaker": "open"},
            {"service": "mailer", "breaker": "closed"},
        ],
        "log": {"position": 40, "lag": 0.25},
    }
    row = replica_row(board.ReplicaReport("protools-2", 1.04, report), "protools-1")
    assert (row.replica, row.this, row.age, row.silent, row.ready) == (
        "protools-2", False, 1.0, False, True,
    )  # fmt: skip
    assert (row.admission_limit, row.admission_in_flight, row.queued, row.refused) == (24, 3, 1, 7)
    assert row.breakers == "generator open, mailer closed"
    assert row.log_lag == 0.25


def test_a_silent_replica_is_not_ready_and_what_a_report_lacks_reads_as_zero() -> None:
    silent = board.ReplicaReport("protools-1", board.SILENT_AFTER + 1, {"ready": True})
    row = replica_row(silent, "protools-1")
    assert row.this
    assert row.silent
    assert not row.ready
    assert (row.admission_limit, row.refused, row.breakers, row.log_lag) == (0, 0, "", 0.0)


def test_a_replica_that_said_it_stopped_is_stopped_not_silent() -> None:
    stopped = board.ReplicaReport("protools-2", board.SILENT_AFTER * 10, {"stopped": True})
    row = replica_row(stopped, "protools-1")
    assert (row.stopped, row.silent, row.ready) == (True, False, False)


def test_this_replicas_row_is_what_it_knows_now_not_its_last_report() -> None:
    old = board.ReplicaReport("protools-1", 1.9, {"ready": False})
    other = board.ReplicaReport("protools-0", 0.5, {"ready": True})
    rows = with_this_one([old, other], "protools-1", {"ready": True})
    assert [(r.replica, r.this, r.age, r.ready) for r in rows] == [
        ("protools-0", False, 0.5, True),
        ("protools-1", True, 0.0, True),
    ]
    assert [r.replica for r in with_this_one([], "protools-1", {"ready": True})] == ["protools-1"]
