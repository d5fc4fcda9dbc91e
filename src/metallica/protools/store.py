"""protools' storage: the event store, the outbox and the command store.

It stores what the engine decides (:class:`~metallica.protools.engine.NewEvent`) and gives back
what the engine folds (:class:`~metallica.protools.engine.RecordedEvent`): storage depends on the
domain, never the reverse.

All three live in one database and are used through one :class:`~metallica.storage.Transaction`,
so a state change commits its events, the outbox messages they imply and the command record
together, or not at all. The SQL is in ``storage/sql/queries/protools.sql``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from metallica.errors import MetallicaError
from metallica.protools.engine import NewEvent, RecordedEvent
from metallica.protools.upcasting import current_version, upcast
from metallica.storage import Row, Sent, Transaction
from metallica.storage.ports import Answered

T = TypeVar("T")


class VersionConflict(MetallicaError):
    """Another writer appended to this stream first; re-read it and decide again."""

    code = "version-conflict"
    status = 409

    def __init__(self, stream_id: str, version: int) -> None:
        super().__init__(f"stream {stream_id!r} already has a version {version}")
        self.stream_id = stream_id
        self.version = version


@dataclass(frozen=True)
class OutboxMessage:
    """A call to deliver to a service, leased to one relay while it delivers it.

    ``attempts`` counts the claims of the message, this one included: the attempt number.
    ``raw_payload`` is the stored JSON, parsed on use (:attr:`payload`), so one unreadable
    message fails its own delivery and never the claim of the messages beside it.
    """

    id: int
    stream_id: str
    step: str
    destination: str
    raw_payload: str
    attempts: int
    available_at: float
    created_at: float

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw_payload)
        return parsed


@dataclass(frozen=True)
class Command:
    """A client command as recorded: its key, a fingerprint of its body, its workflow."""

    idempotency_key: str
    fingerprint: str
    workflow_id: str
    created_at: float


@dataclass(frozen=True)
class Later(Generic[T]):
    """What a write sent without waiting (:meth:`Transaction.send`) will have answered:
    :meth:`get` reads it, waiting for it if need be, and raises what the write raises (a
    :class:`VersionConflict`, a lock timeout). A use case that sends reads every answer
    before it returns: a write whose answer nobody read may have done nothing."""

    sent: Sent
    read: Callable[[Sent], T]

    def get(self) -> T:
        return self.read(self.sent)


def event_from_row(row: Row) -> RecordedEvent:
    return RecordedEvent(
        global_position=int(row["global_position"]),
        stream_id=row["stream_id"],
        version=int(row["version"]),
        type=row["type"],
        data=upcast(row["type"], int(row["schema_version"]), json.loads(row["data"])),
        recorded_at=float(row["recorded_at"]),
    )


def _message(row: Row) -> OutboxMessage:
    return OutboxMessage(
        id=int(row["id"]),
        stream_id=row["stream_id"],
        step=row["step"],
        destination=row["destination"],
        raw_payload=str(row["payload"]),
        attempts=int(row["attempts"]),
        available_at=float(row["available_at"]),
        created_at=float(row["created_at"]),
    )


# --- event store -----------------------------------------------------------------------------

MAX_POSITION = 2**63 - 1  # past every event: the first page


def take_log_turn(tx: Transaction) -> None:
    """Wait for the log's turn and hold it to the end of ``tx`` (``protools/log.py``): a
    transaction that will append takes it before it locks any row. Sent without waiting: in
    a pipelined transaction, the wait is answered with the statements that follow."""
    tx.send("take_log_turn")


def append(
    tx: Transaction,
    stream_id: str,
    expected_version: int,
    events: Sequence[NewEvent],
    *,
    now: float,
) -> list[int]:
    """Append ``events`` after ``expected_version``; raise :class:`VersionConflict` if taken
    (or if ``expected_version`` is past the end of the stream: versions never leave a gap).

    Returns the global positions of the new events.
    """
    return send_append(tx, stream_id, expected_version, events, now=now).get()


def send_append(
    tx: Transaction,
    stream_id: str,
    expected_version: int,
    events: Sequence[NewEvent],
    *,
    now: float,
) -> Later[list[int]]:
    """:func:`append`, sent without waiting: its positions, or its conflict, come with
    :meth:`Later.get`."""
    if not events:
        return Later(Answered([], 0), lambda _: [])
    sent = tx.send(
        "append_events",
        stream_id=stream_id,
        first_version=expected_version + 1,
        events=json.dumps(
            [
                [
                    event.type,
                    json.dumps(event.data, separators=(",", ":")),
                    current_version(event.type),
                ]
                for event in events
            ],
            separators=(",", ":"),
        ),
        recorded_at=now,
    )

    def positions(answer: Sent) -> list[int]:
        rows = answer.rows()
        if len(rows) != len(events):
            taken = {int(row["version"]) for row in rows}
            first_missing = next(
                v
                for v in range(expected_version + 1, expected_version + len(events) + 1)
                if v not in taken
            )
            raise VersionConflict(stream_id, first_missing)
        by_version = sorted((int(row["version"]), int(row["global_position"])) for row in rows)
        return [position for _, position in by_version]

    return Later(sent, positions)


def read_stream(tx: Transaction, stream_id: str) -> list[RecordedEvent]:
    """Every event of one stream, in version order."""
    return [event_from_row(row) for row in tx.fetch_all("read_stream", stream_id=stream_id)]


def read_all(tx: Transaction, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
    """The global log after position ``after``, in order."""
    return [event_from_row(row) for row in tx.fetch_all("read_all", after=after, limit=limit)]


@dataclass(frozen=True)
class LoggedEvent:
    """An event as the log's followers read it: with the client that started its workflow
    (None for a workflow started before clients had names)."""

    event: RecordedEvent
    client: str | None


def log_head(tx: Transaction) -> int:
    """The log's last position (0 while it is empty)."""
    row = tx.fetch_one("log_head")
    assert row is not None, "an aggregate always returns a row"
    return int(row["head"])


def read_log(
    tx: Transaction,
    *,
    after: int,
    until: int = MAX_POSITION,
    limit: int,
    types: Sequence[str] = (),
    stream_id: str = "",
    client: str = "",
) -> list[LoggedEvent]:
    """The log's events after position ``after`` and up to ``until``, in order, at most
    ``limit``; only ``types`` (all when empty), one workflow's (``stream_id``) or one client's
    (``client``) when given."""
    rows = tx.fetch_all(
        "read_log",
        after=after,
        until=until,
        limit=limit,
        strings=json.dumps(list(types)),
        stream_id=stream_id,
        client=client,
    )
    return [LoggedEvent(event_from_row(row), row["client"]) for row in rows]


def oldest_write(tx: Transaction) -> float:
    """Seconds the oldest open write transaction of this database has been open (0 if none)."""
    row = tx.fetch_one("oldest_write")
    assert row is not None
    return max(0.0, float(row["seconds"]))


def list_streams(tx: Transaction, *, limit: int = 50) -> list[tuple[str, Mapping[str, Any], float]]:
    """``(stream_id, first event's data, start time)`` of the newest streams."""
    rows = tx.fetch_all("list_streams", limit=limit)
    return [(row["stream_id"], json.loads(row["data"]), float(row["recorded_at"])) for row in rows]


@dataclass(frozen=True)
class WorkflowSummary:
    """A workflow as a listing shows it; ``position`` is its start's place in the log (a page's
    cursor)."""

    workflow_id: str
    status: str
    input: Mapping[str, Any]
    started_at: float
    position: int
    client: str | None = None


def list_workflows(
    tx: Transaction, client: str, *, status: str = "", before: int | None = None, limit: int = 20
) -> list[WorkflowSummary]:
    """``client``'s workflows, newest first, started before log position ``before``, with
    ``status`` (running, completed, failed; "" for any)."""
    rows = tx.fetch_all(
        "list_workflows",
        client=client,
        status=status,
        before=before if before is not None else MAX_POSITION,
        limit=limit,
    )
    return [_summary(row) for row in rows]


def _summary(row: Row) -> WorkflowSummary:
    return WorkflowSummary(
        workflow_id=row["stream_id"],
        status=row["status"],
        input=json.loads(row["input"]),
        started_at=float(row["recorded_at"]),
        position=int(row["global_position"]),
        client=row.get("client"),
    )


def _like(text: str) -> str:
    """``text`` for a LIKE pattern, its wildcards taken literally (``!`` escapes)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def console_workflows(
    tx: Transaction, *, status: str = "", search: str = "", before: int | None = None, limit: int
) -> list[WorkflowSummary]:
    """Every client's workflows, newest first, started before log position ``before``, with
    ``status`` ("" for any), matching ``search`` (a workflow id or a username's start)."""
    needle = json.dumps(search)[1:-1]  # as the input's JSON spells it
    rows = tx.fetch_all(
        "console_workflows",
        status=status,
        search=search,
        pattern=f'%"username":"{_like(needle)}%',
        before=before if before is not None else MAX_POSITION,
        limit=limit,
    )
    return [_summary(row) for row in rows]


# --- outbox ---------------------------------------------------------------------------------
#
# Outbox times (when a message falls due, when a lease runs out) are read from the database's
# clock, never a replica's: callers pass durations. A lease is a fence: an attempt's outcome is
# recorded by the holder of that attempt's lease only (see :func:`lock_message`).


@dataclass(frozen=True)
class Lease:
    """Who claims a message, and for how long (seconds, by the database's clock)."""

    owner: str
    seconds: float


@dataclass(frozen=True)
class LeaseState:
    """Who holds a message now, and which attempt they claimed."""

    owner: str | None
    attempts: int

    def held_by(self, owner: str, attempt: int) -> bool:
        return self.owner == owner and self.attempts == attempt


def enqueue(
    tx: Transaction,
    *,
    stream_id: str,
    step: str,
    destination: str,
    payload: Mapping[str, Any],
    delay: float = 0.0,
    lease: Lease | None = None,
) -> OutboxMessage:
    """Put a message in the outbox, due in ``delay`` seconds; with ``lease``, already claimed
    by the caller's relay (its first attempt, to deliver at once)."""
    return send_enqueue(
        tx,
        stream_id=stream_id,
        step=step,
        destination=destination,
        payload=payload,
        delay=delay,
        lease=lease,
    ).get()


def send_enqueue(
    tx: Transaction,
    *,
    stream_id: str,
    step: str,
    destination: str,
    payload: Mapping[str, Any],
    delay: float = 0.0,
    lease: Lease | None = None,
) -> Later[OutboxMessage]:
    """:func:`enqueue`, sent without waiting: the message comes with :meth:`Later.get`."""
    sent = tx.send(
        "enqueue_message",
        stream_id=stream_id,
        step=step,
        destination=destination,
        payload=json.dumps(payload, separators=(",", ":")),
        delay=delay,
        owner=lease.owner if lease else None,
        lease_seconds=lease.seconds if lease else None,
    )

    def message(answer: Sent) -> OutboxMessage:
        row = answer.row()
        assert row is not None, "an INSERT ... RETURNING returns its row"
        return _message(row)

    return Later(sent, message)


def claim_due(
    tx: Transaction, lease: Lease, *, limit: int, skip: Sequence[str] = ()
) -> list[OutboxMessage]:
    """Lease up to ``limit`` due messages that no live lease holds, oldest first, leaving out
    those for the destinations in ``skip``."""
    if limit <= 0:
        return []
    rows = tx.fetch_all(
        "claim_due_messages",
        owner=lease.owner,
        lease_seconds=lease.seconds,
        limit=limit,
        strings=json.dumps(list(skip)),
    )
    return sorted((_message(row) for row in rows), key=lambda message: message.available_at)


def lock_message(tx: Transaction, message_id: int) -> LeaseState | None:
    """The message's lease, locked until ``tx`` ends; None if the message is gone."""
    row = tx.fetch_one("lock_message", id=message_id)
    return None if row is None else LeaseState(row["lease_owner"], int(row["attempts"]))


def extend_leases(tx: Transaction, lease: Lease, message_ids: Sequence[int]) -> int:
    """Extend ``lease.owner``'s leases on ``message_ids`` to ``lease.seconds`` from now; return
    how many it still held."""
    if not message_ids:
        return 0
    return tx.execute(
        "extend_leases",
        owner=lease.owner,
        lease_seconds=lease.seconds,
        ids=json.dumps(list(message_ids)),
    )


def complete(tx: Transaction, message_id: int) -> None:
    """The message's outcome is recorded: remove it (sent without waiting)."""
    tx.send("delete_message", id=message_id)


def reschedule(tx: Transaction, message_id: int, *, delay: float) -> None:
    """Release the lease and deliver again in ``delay`` seconds (sent without waiting)."""
    tx.send("reschedule_message", id=message_id, delay=max(delay, 0.0))


def release_unattempted(tx: Transaction, message_id: int, *, delay: float) -> None:
    """Undo the claim of an attempt that was never made, and deliver again in ``delay``
    (sent without waiting)."""
    tx.send("release_unattempted", id=message_id, delay=max(delay, 0.0))


@dataclass(frozen=True)
class OutboxSummary:
    """``due_in``: seconds until the next message falls due or a lease runs out (0 if one is
    overdue; None when none is left); ``depth``: messages in the outbox; ``oldest_age``: the
    oldest one's age in seconds (0 when empty)."""

    due_in: float | None
    depth: int
    oldest_age: float


def summary(tx: Transaction, *, skip: Sequence[str] = ()) -> OutboxSummary:
    """The outbox at a glance; ``due_in`` leaves out the destinations in ``skip``."""
    row = tx.fetch_one("outbox_summary", strings=json.dumps(list(skip)))
    assert row is not None, "an aggregate always returns a row"
    due = row["due"]
    return OutboxSummary(
        None if due is None else max(float(due), 0.0),
        int(row["depth"]),
        max(float(row["oldest_age"] or 0.0), 0.0),
    )


def pending(tx: Transaction) -> list[Row]:
    """Every message still in the outbox."""
    return tx.fetch_all("pending_messages")


# --- command store ---------------------------------------------------------------------------


def record_command(tx: Transaction, command: Command) -> Command:
    """Record a client command; the first writer of a key wins and is returned to everyone."""
    inserted = tx.fetch_one(
        "insert_command",
        idempotency_key=command.idempotency_key,
        fingerprint=command.fingerprint,
        workflow_id=command.workflow_id,
        created_at=command.created_at,
    )
    if inserted is not None:
        return command
    existing = find_command(tx, command.idempotency_key)
    assert existing is not None, (
        "a conflicting command row must be visible once its writer committed"
    )
    return existing


def send_command(tx: Transaction, command: Command) -> Later[bool]:
    """Record a client command if its key is new, sent without waiting; :meth:`Later.get`
    says whether it was (False: another command holds the key, see :func:`record_command`)."""
    sent = tx.send(
        "insert_command",
        idempotency_key=command.idempotency_key,
        fingerprint=command.fingerprint,
        workflow_id=command.workflow_id,
        created_at=command.created_at,
    )
    return Later(sent, lambda answer: answer.row() is not None)


def expire_commands(tx: Transaction, *, cutoff: float, batch: int) -> int:
    """Forget up to ``batch`` commands whose workflow ended before ``cutoff``; how many."""
    return tx.execute("expire_commands", cutoff=cutoff, batch=batch)


def find_command(tx: Transaction, idempotency_key: str) -> Command | None:
    """The command recorded under a key, if any."""
    row = tx.fetch_one("get_command", idempotency_key=idempotency_key)
    if row is None:
        return None
    return Command(
        idempotency_key=row["idempotency_key"],
        fingerprint=row["fingerprint"],
        workflow_id=row["workflow_id"],
        created_at=float(row["created_at"]),
    )
