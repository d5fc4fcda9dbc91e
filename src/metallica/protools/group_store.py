"""Consumer groups in storage: each query of ``sql/queries/protools.sql`` that groups use, as a
typed function over a transaction (the event store and the outbox are :mod:`.store`'s)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from metallica.protools.engine import RecordedEvent
from metallica.protools.groups import GroupSettings, Pending
from metallica.protools.store import event_from_row
from metallica.storage import Row, Transaction


@dataclass(frozen=True)
class Group:
    """A consumer group as stored."""

    name: str
    filled_to: int
    settings: GroupSettings
    redeliveries: int
    created_at: float


@dataclass(frozen=True)
class GroupState:
    """What a group has in hand now."""

    unfinished: int
    in_flight: int
    parked: int
    oldest: int | None  # its oldest unfinished position


@dataclass(frozen=True)
class HeldEvent:
    """A pending event as an ack, nack or extend finds it (times by the database's clock)."""

    pending: Pending
    parked: bool
    now: float


@dataclass(frozen=True)
class ParkedEvent:
    event: RecordedEvent
    deliveries: int
    member: str | None
    parked_at: float


def _ids(positions: Sequence[int]) -> str:
    return json.dumps(list(positions))


def _group(row: Row) -> Group:
    return Group(
        name=row["name"],
        filled_to=int(row["filled_to"]),
        settings=GroupSettings(
            types=tuple(json.loads(row["types"])),
            ack_wait=float(row["ack_wait"]),
            max_deliver=int(row["max_deliver"]),
            max_ack_pending=int(row["max_ack_pending"]),
        ),
        redeliveries=int(row["redeliveries"]),
        created_at=float(row["created_at"]),
    )


def _pending(row: Row) -> Pending:
    leased_until = row["leased_until"]
    return Pending(
        position=int(row["position"]),
        stream_id=row["stream_id"],
        deliveries=int(row["deliveries"]),
        member=row["member"],
        leased_until=None if leased_until is None else float(leased_until),
        due_at=float(row["due_at"]),
    )


def create(tx: Transaction, name: str, settings: GroupSettings, *, filled_to: int) -> bool:
    """Create a group reading the log after ``filled_to``; False when the name is taken."""
    return (
        tx.execute(
            "create_group",
            name=name,
            filled_to=filled_to,
            types=json.dumps(list(settings.types)),
            ack_wait=settings.ack_wait,
            max_deliver=settings.max_deliver,
            max_ack_pending=settings.max_ack_pending,
        )
        == 1
    )


def lock(tx: Transaction, name: str) -> Group | None:
    """The group, locked until the transaction ends (None when there is none)."""
    row = tx.fetch_one("lock_group", name=name)
    return None if row is None else _group(row)


def find(tx: Transaction, name: str) -> Group | None:
    """The group, read only (None when there is none)."""
    row = tx.fetch_one("find_group", name=name)
    return None if row is None else _group(row)


def all_groups(tx: Transaction) -> list[Group]:
    return [_group(row) for row in tx.fetch_all("list_groups")]


def delete(tx: Transaction, name: str) -> None:
    tx.execute("delete_group_pending", name=name, after=-1, parked=1)
    tx.execute("delete_group", name=name)


def forget_after(tx: Transaction, name: str, position: int) -> None:
    """Drop what the group has pending after ``position``, and its unparked events before."""
    tx.execute("delete_group_pending", name=name, after=-1, parked=0)
    tx.execute("delete_group_pending", name=name, after=position, parked=1)


def move(tx: Transaction, name: str, filled_to: int, *, redeliveries: int = 0) -> None:
    tx.execute("move_group", name=name, filled_to=filled_to, redeliveries=redeliveries)


def count_unparked(tx: Transaction, name: str) -> int:
    row = tx.fetch_one("count_unparked", name=name)
    assert row is not None
    return int(row["n"])


def next_positions(
    tx: Transaction, types: Sequence[str], *, after: int, until: int, limit: int
) -> list[int]:
    rows = tx.fetch_all(
        "log_positions", after=after, until=until, limit=limit, strings=json.dumps(list(types))
    )
    return [int(row["global_position"]) for row in rows]


def fill(tx: Transaction, group: Group, *, after: int, until: int) -> None:
    tx.execute(
        "fill_group",
        name=group.name,
        after=after,
        until=until,
        strings=json.dumps(list(group.settings.types)),
    )


def unparked(tx: Transaction, name: str) -> tuple[list[Pending], float]:
    """The group's unfinished events in log order, and the database's clock."""
    rows = tx.fetch_all("unparked_pending", name=name)
    now = float(rows[0]["now"]) if rows else 0.0
    return [_pending(row) for row in rows], now


def lease(
    tx: Transaction, name: str, positions: Sequence[int], *, member: str, ack_wait: float
) -> None:
    tx.execute("lease_pending", name=name, ids=_ids(positions), member=member, ack_wait=ack_wait)


def held(tx: Transaction, name: str, positions: Sequence[int]) -> dict[int, HeldEvent]:
    rows = tx.fetch_all("pending_at", name=name, ids=_ids(positions))
    return {
        int(row["position"]): HeldEvent(
            _pending(row), row["parked_at"] is not None, float(row["now"])
        )
        for row in rows
    }


def ack(tx: Transaction, name: str, positions: Sequence[int]) -> None:
    if positions:
        tx.execute("ack_pending", name=name, ids=_ids(positions))


def release(tx: Transaction, name: str, positions: Sequence[int], *, delay: float) -> None:
    if positions:
        tx.execute("release_pending", name=name, ids=_ids(positions), delay=delay)


def park(tx: Transaction, name: str, positions: Sequence[int]) -> None:
    if positions:
        tx.execute("park_pending", name=name, ids=_ids(positions))


def extend(tx: Transaction, name: str, positions: Sequence[int], *, ack_wait: float) -> None:
    if positions:
        tx.execute("extend_pending", name=name, ids=_ids(positions), ack_wait=ack_wait)


def unpark(tx: Transaction, name: str, positions: Sequence[int] | None) -> int:
    """Parked events back to pending (all of them for None); how many."""
    return tx.execute(
        "unpark_pending",
        name=name,
        ids=_ids(positions or []),
        all=1 if positions is None else 0,
    )


def parked(tx: Transaction, name: str, *, after: int, limit: int) -> list[ParkedEvent]:
    rows = tx.fetch_all("list_parked", name=name, after=after, limit=limit)
    return [
        ParkedEvent(
            event_from_row(row), int(row["deliveries"]), row["member"], float(row["parked_at"])
        )
        for row in rows
    ]


def state(tx: Transaction, name: str) -> GroupState:
    row = tx.fetch_one("group_state", name=name)
    assert row is not None
    oldest = row["oldest"]
    return GroupState(
        unfinished=int(row["unfinished"] or 0),
        in_flight=int(row["in_flight"] or 0),
        parked=int(row["parked"] or 0),
        oldest=None if oldest is None else int(oldest),
    )


def members(tx: Transaction, name: str) -> dict[str, int]:
    return {
        row["member"]: int(row["in_flight"]) for row in tx.fetch_all("members_in_flight", name=name)
    }


def event_age(tx: Transaction, position: int) -> float:
    """Seconds since the event at ``position`` was recorded (0 when there is none)."""
    row = tx.fetch_one("event_time", position=position)
    return 0.0 if row is None else max(0.0, float(row["now"]) - float(row["recorded_at"]))


def first_after(tx: Transaction, types: Sequence[str], after: int) -> tuple[int, float] | None:
    """The first event after ``after`` of ``types``: its position and age in seconds."""
    row = tx.fetch_one("first_event_after", after=after, strings=json.dumps(list(types)))
    if row is None:
        return None
    age = max(0.0, float(row["now"]) - float(row["recorded_at"]))
    return int(row["global_position"]), age


def read_positions(tx: Transaction, positions: Sequence[int]) -> list[RecordedEvent]:
    if not positions:
        return []
    return [event_from_row(row) for row in tx.fetch_all("read_positions", ids=_ids(positions))]
