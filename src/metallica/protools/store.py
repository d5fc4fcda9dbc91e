"""protools' storage: the event store, the outbox and the command store.

All three live in one database and are used through one :class:`~metallica.storage.Transaction`,
so a state change commits its events, the outbox messages they imply and the command record
together, or not at all. The SQL is in ``storage/sql/<dialect>/protools/queries.sql``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metallica.errors import MetallicaError
from metallica.storage import Row, Transaction


class VersionConflict(MetallicaError):
    """Another writer appended to this stream first; re-read it and decide again."""

    code = "version-conflict"
    status = 409

    def __init__(self, stream_id: str, version: int) -> None:
        super().__init__(f"stream {stream_id!r} already has a version {version}")
        self.stream_id = stream_id
        self.version = version


@dataclass(frozen=True)
class NewEvent:
    """An event to append: its type and its JSON data."""

    type: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored: its place in its stream and in the global log."""

    global_position: int
    stream_id: str
    version: int
    type: str
    data: Mapping[str, Any]
    recorded_at: float


@dataclass(frozen=True)
class OutboxMessage:
    """A call to deliver to a service, leased to one relay while it delivers it."""

    id: int
    stream_id: str
    step: str
    destination: str
    payload: Mapping[str, Any]
    attempts: int
    available_at: float
    created_at: float


@dataclass(frozen=True)
class Command:
    """A client command as recorded: its key, a fingerprint of its body, its workflow."""

    idempotency_key: str
    fingerprint: str
    workflow_id: str
    created_at: float


def _event(row: Row) -> RecordedEvent:
    return RecordedEvent(
        global_position=int(row["global_position"]),
        stream_id=row["stream_id"],
        version=int(row["version"]),
        type=row["type"],
        data=json.loads(row["data"]),
        recorded_at=float(row["recorded_at"]),
    )


def _message(row: Row) -> OutboxMessage:
    return OutboxMessage(
        id=int(row["id"]),
        stream_id=row["stream_id"],
        step=row["step"],
        destination=row["destination"],
        payload=json.loads(row["payload"]),
        attempts=int(row["attempts"]),
        available_at=float(row["available_at"]),
        created_at=float(row["created_at"]),
    )


# --- event store -----------------------------------------------------------------------------


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
    positions = []
    for offset, event in enumerate(events, start=1):
        version = expected_version + offset
        row = tx.fetch_one(
            "append_event",
            stream_id=stream_id,
            version=version,
            type=event.type,
            data=json.dumps(event.data, separators=(",", ":")),
            recorded_at=now,
        )
        if row is None:
            raise VersionConflict(stream_id, version)
        positions.append(int(row["global_position"]))
    return positions


def read_stream(tx: Transaction, stream_id: str) -> list[RecordedEvent]:
    """Every event of one stream, in version order."""
    return [_event(row) for row in tx.fetch_all("read_stream", stream_id=stream_id)]


def read_all(tx: Transaction, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
    """The global log after position ``after``, in order."""
    return [_event(row) for row in tx.fetch_all("read_all", after=after, limit=limit)]


def list_streams(tx: Transaction, *, limit: int = 50) -> list[tuple[str, Mapping[str, Any], float]]:
    """``(stream_id, first event's data, start time)`` of the newest streams."""
    rows = tx.fetch_all("list_streams", limit=limit)
    return [(row["stream_id"], json.loads(row["data"]), float(row["recorded_at"])) for row in rows]


# --- outbox ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """Who holds a message and until when."""

    owner: str
    expires_at: float


def enqueue(
    tx: Transaction,
    *,
    stream_id: str,
    step: str,
    destination: str,
    payload: Mapping[str, Any],
    now: float,
    available_at: float | None = None,
    lease: Lease | None = None,
) -> int:
    """Put a message in the outbox; with ``lease``, already claimed by the caller's relay."""
    row = tx.fetch_one(
        "enqueue_message",
        stream_id=stream_id,
        step=step,
        destination=destination,
        payload=json.dumps(payload, separators=(",", ":")),
        available_at=now if available_at is None else available_at,
        created_at=now,
    )
    assert row is not None
    message_id = int(row["id"])
    if lease is not None:
        claimed = claim(tx, message_id, lease, now=now)
        assert claimed is not None
    return message_id


def claim(tx: Transaction, message_id: int, lease: Lease, *, now: float) -> OutboxMessage | None:
    """Lease one message, unless another relay holds a live lease on it (or it is gone)."""
    row = tx.fetch_one(
        "claim_message",
        id=message_id,
        owner=lease.owner,
        lease_expires_at=lease.expires_at,
        now=now,
    )
    return _message(row) if row is not None else None


def claim_due(tx: Transaction, lease: Lease, *, now: float, limit: int) -> list[OutboxMessage]:
    """Lease up to ``limit`` due messages that no live lease holds."""
    rows = tx.fetch_all(
        "claim_due_messages",
        owner=lease.owner,
        lease_expires_at=lease.expires_at,
        now=now,
        limit=limit,
    )
    return sorted((_message(row) for row in rows), key=lambda message: message.available_at)


def complete(tx: Transaction, message_id: int) -> None:
    """The message's outcome is recorded: remove it."""
    tx.execute("delete_message", id=message_id)


def reschedule(tx: Transaction, message_id: int, *, available_at: float) -> None:
    """Release the lease and deliver again at ``available_at``."""
    tx.execute("reschedule_message", id=message_id, available_at=available_at)


def next_due_time(tx: Transaction) -> float | None:
    """When the next message falls due or a lease runs out; None when the outbox is empty."""
    row = tx.fetch_one("next_due_time")
    return None if row is None or row["due"] is None else float(row["due"])


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
