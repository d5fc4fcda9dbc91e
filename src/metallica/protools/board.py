"""The health board: every protools replica's own health, readable from any replica.

A replica's admission (limit, in progress, queued, refusals), its guards of the services it
calls (breaker, adaptive limit, retry budget) and its log tail live in its memory alone: the
console served by one replica could show only that one. So each replica writes a snapshot of
them every :data:`REPORT_SECONDS` into its row of ``replica_health``, in the database they all
share, and the console reads every row. A replica that stops says so in its row
(:func:`sign_off`); a snapshot older than :data:`SILENT_AFTER` says the replica has stopped
reporting without saying so (crashed, frozen, cut off from the database); one older than
:data:`FORGET_AFTER` is deleted by the next report of any replica (a replica gone for good, or
renamed).

The board costs one small transaction per replica every two seconds; nothing on the hot path
reads or writes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metallica.storage import Database

REPORT_SECONDS = 2.0
SILENT_AFTER = 3 * REPORT_SECONDS
FORGET_AFTER = 86_400.0


@dataclass(frozen=True)
class ReplicaReport:
    """A replica's latest snapshot, and its age by the database's clock (seconds)."""

    replica: str
    age: float
    report: Mapping[str, Any]

    @property
    def silent(self) -> bool:
        return self.age > SILENT_AFTER


def publish(database: Database, replica_id: str, report: Mapping[str, Any]) -> None:
    """Replace ``replica_id``'s snapshot with ``report`` (JSON), and forget long-silent ones."""
    with database.transaction() as tx:
        tx.execute(
            "report_replica_health",
            replica_id=replica_id,
            report=json.dumps(report, sort_keys=True),
        )
        tx.execute("forget_silent_replicas", keep=FORGET_AFTER)


def sign_off(database: Database, replica_id: str) -> None:
    """The replica stops: its row says so (``stopped``), rather than going silent."""
    publish(database, replica_id, {"stopped": True})


def read(database: Database) -> list[ReplicaReport]:
    """Every replica's latest snapshot, by replica id."""
    with database.transaction(write=False) as tx:
        rows = tx.fetch_all("replica_health_reports")
    return [
        ReplicaReport(
            str(row["replica_id"]), max(0.0, float(row["age"])), json.loads(row["report"])
        )
        for row in rows
    ]
