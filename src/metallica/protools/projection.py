"""The workflows read model (``workflows``): each workflow as listings show it (its client,
status, input, start time and place in the log), kept by the projector in the transaction of
the events that change it, so a listing is as fresh as the events; and rebuilt from the events
alone, to check it or to start it afresh after a change of its shape.

The projector is a fold of the events into rows, as :mod:`.engine` folds them into a state: a
start inserts its workflow's row (running), an end sets its status. It runs inside the use
case's transaction (:meth:`.service.WorkflowService._append`): the row and its events commit
together or not at all, so the model can never lag nor run ahead of the log.

:func:`rebuild` takes the log's turn (no event is appended meanwhile), reads the live rows,
writes them afresh from the events, and returns what differed: a model that only its
projector ever wrote differs in nothing (the test after a lab run with faults says so).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from metallica.protools import engine, store
from metallica.storage import Row, Transaction

ENDS = {engine.COMPLETED: engine.COMPLETED_STATUS, engine.FAILED: engine.FAILED_STATUS}


def project(
    tx: Transaction,
    workflow_id: str,
    events: Sequence[engine.NewEvent],
    *,
    now: float,
) -> None:
    """Bring the read model up to date with ``events``, just appended (sent without waiting:
    a start's row takes its position from its event, in the database)."""
    for event in events:
        if event.type == engine.STARTED:
            tx.send(
                "project_start",
                workflow_id=workflow_id,
                client=event.data.get("client"),
                input=json.dumps(event.data.get("input", {}), separators=(",", ":")),
                started_at=now,
            )
        elif event.type in ENDS:
            tx.send("project_end", workflow_id=workflow_id, status=ENDS[event.type])


@dataclass
class Rebuilt:
    """What a rebuild found: rows the live model lacked, held in excess, or held otherwise."""

    rows: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.missing or self.extra or self.changed)


COLUMNS = ("workflow_id", "client", "status", "input", "started_at", "position")


def _row(row: Row) -> tuple[Any, ...]:
    return (
        row["client"],
        row["status"],
        json.loads(row["input"]),
        float(row["started_at"]),
        int(row["position"]),
    )


def compare(tx: Transaction) -> tuple[Rebuilt, list[Row]]:
    """The live read model against the one the events give (read while holding the log's turn,
    so that no event lands in between); and the rows the events give."""
    store.take_log_turn(tx)
    live = {row["workflow_id"]: _row(row) for row in tx.fetch_all("all_workflows")}
    derived = tx.fetch_all("derive_workflows")
    fresh = {row["workflow_id"]: _row(row) for row in derived}
    found = Rebuilt(
        rows=len(fresh),
        missing=sorted(set(fresh) - set(live)),
        extra=sorted(set(live) - set(fresh)),
        changed=sorted(w for w in set(live) & set(fresh) if live[w] != fresh[w]),
    )
    return found, derived


def rebuild(tx: Transaction) -> Rebuilt:
    """Write the read model afresh from the events; what the live one had otherwise."""
    found, derived = compare(tx)
    tx.execute("clear_workflows")
    tx.copy_rows("workflows", COLUMNS, ([row[c] for c in COLUMNS] for row in derived))
    return found
