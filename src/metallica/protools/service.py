"""protools use cases, for any workflow definition. The only place that opens transactions.

Each use case reads a workflow's events, asks the pure engine what to do, and commits the new
events, the outbox change and (for a new command) the command record in one transaction. A
version conflict (another replica wrote first) re-reads and decides again.

The use cases that append (accepting a command, recording an attempt's outcome, parking an
attempt, ending a message past its deadline) are units of a group commit
(:mod:`metallica.storage.group_commit`): those that arrive together share one transaction and
one flush, and each returns only once that transaction has committed. What a use case writes,
and what it is told, do not change: its writes still commit all together or not at all, before
anything acts on them.

**Sent together, checked after.** The batch's transaction is pipelined: the hot path's units
(accepting a new command, recording a success) send every statement without waiting
(``store.send_*``), then read every answer, which costs one round trip for the whole unit; a
unit reads every answer before it returns, since a write whose answer nobody read may have
done nothing (an append's conflict is an answer). Accepting a command guesses that its key is
new (a replay was answered before admission): if another command took the key meanwhile, or
a lock was waited for, the unit fails, its batch is rolled back and run again without it, and
the command is decided the careful way (the key first, then the rest), as before.

**No deadlock, by lock order.** A batch locks several rows (messages it records or parks), and
the log's turn. Each batch takes the turn first, before any row (``store.take_log_turn``), so
batches, on this replica and on the others, take turns whole; every other writer that locks
outbox rows takes none of the turn and skips the rows it would wait for (claiming due messages,
renewing leases: ``SKIP LOCKED``). A batch that took rows before the turn, and a lease renewal
that waited for rows while holding others, deadlocked here, stalling every caller of the batch
until PostgreSQL's deadlock timeout.

**Three commits per workflow, and the one the invariants would let go.** Alone, a workflow
of the password definition commits three times; under load, the group commit shares each
commit among the workflows that wait together (1.2 to 1.7 commits per workflow at C=16 and
C=64, ``bench/README.md``). Each commit, with what a crash just before it would lose
(the invariants are those of ``DESIGN.md``):

1. *The accept* (the command's key, ``WorkflowStarted``, the generator's message). It must be
   durable before the client hears of the workflow and before the generator is called. Lost
   after an answer, the command is gone although accepted (invariant 1). Lost after a call
   but before any answer, the generator holds a password under a step key made from a
   workflow id nobody recorded: a client sending the same command again starts a new
   workflow, with a new step key, which the generator refuses as ``username-taken``; the
   username then has a password nobody will ever be given (invariant 2, and 6 for everyone
   after). It cannot go.
2. *The generator's outcome* (``StepSucceeded`` with the sealed password, the mail's message).
   Folded into the third commit, a crash between the generator's answer and that commit would
   lose the answer; the generate message's lease runs out (``lease-seconds``), another replica
   claims it, counts the attempt unrecorded (in doubt) and asks the generator again with the
   same step key; the generator's command store answers with the same password
   (``DESIGN.md``: a repeated key gets the same status and body) for as long as it keeps the
   key (``idempotency-retention``, a day, far above a workflow's deadline; past it a replay gets
   410 and the workflow fails ``password-lost``); the mail goes again under the mail step's
   key, which the mail-sender answers from its own store without writing a second mail. So
   invariants 2 and 3 would hold. It would cost the rule every use case here keeps (no call
   starts before the state that justifies it is durable: the mail would carry a password
   protools has not recorded, and the console's timeline would lose the call between), a
   second generator call after each such crash, and a path of its own in the relay (two calls
   under one lease, the mail's failures recorded with the generator's success). The gain,
   measured: a commit is a flush (136 µs on this machine) and two short round trips, about 0.3
   ms of a 16 ms p50 at C=1; at C=16 the machine is bound by CPU per workflow, not commits
   (the WAL per workflow does not move with the batch size). Not built, for that.
3. *The mail's outcome and* ``WorkflowCompleted``. It must be durable before the client is
   answered: a completed answer that a crash could take back would make a repeat of the
   command answer differently (invariant 4). It cannot go.

The definition's secret fields are sealed here, on their way into the store, and opened on
their way out (:mod:`~metallica.protools.sealing`): nothing above this module sees a sealed
value, nothing below it sees a clear one.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metallica.errors import CommandInProgress, KeyReusedWithOtherBody
from metallica.fingerprints import fingerprint
from metallica.protools import engine, projection, store
from metallica.protools.sealing import FieldSealer, ProtoolsKeyring
from metallica.storage import Database, LockTimeout, Transaction
from metallica.storage.group_commit import MAX_BATCH, GroupCommit

logger = logging.getLogger(__name__)

CONFLICT_RETRIES = 8
EXPIRY_BATCH = 1000  # commands forgotten per transaction

# Backoff jitter from a generator of our own, not the process-wide one.
_BACKOFF = random.Random()


@dataclass(frozen=True)
class Accepted:
    """A command's workflow; ``message`` is its first call when the workflow is new (leased to
    us when we asked for it, to deliver at once), and ``state`` the state it starts in."""

    workflow_id: str
    message: store.OutboxMessage | None
    state: engine.WorkflowState | None = None


@dataclass(frozen=True)
class Recorded:
    """An attempt's outcome is committed; ``message``: the next step's call, leased to us.

    ``fenced``: we had lost the lease, so only what the outcome proved was recorded; ``late``:
    the step was no longer awaited (a success that differed was kept as a late event).
    """

    message: store.OutboxMessage | None
    finished: bool
    retry_at: float | None
    fenced: bool = False
    late: bool = False
    state: engine.WorkflowState | None = None  # the workflow as this commit left it


class _KeyNotFree(Exception):
    """The optimistic accept found its key taken, or waited on a lock: decide the careful way."""


class WorkflowService:
    def __init__(
        self,
        database: Database,
        definition: engine.WorkflowDefinition,
        *,
        replica_id: str,
        lease_seconds: float,
        keys: ProtoolsKeyring,
        commit_batch: int = MAX_BATCH,
        clock: Callable[[], float] = time.time,
        random_unit: Callable[[], float] = _BACKOFF.random,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.database = database
        self.definition = definition
        self.replica_id = replica_id
        self.lease = store.Lease(replica_id, lease_seconds)
        self.sealer = FieldSealer(keys, definition.secret_fields)
        # The hot path's writes (accepts, outcomes): many workflows' records in one commit.
        self.writer = GroupCommit(database, max_batch=commit_batch, begin=store.take_log_turn)
        self._clock = clock
        self._random = random_unit
        self._new_id = new_id

    # --- commands ------------------------------------------------------------------------------

    def accept(
        self,
        idempotency_key: str,
        body: Mapping[str, Any],
        *,
        lease: bool = True,
        client: str | None = None,
        queued: float = 0.0,
    ) -> Accepted:
        """Start a workflow for a client command, or find the one this key already started.

        With ``lease``, the first call is enqueued leased to this replica, to deliver at once;
        without (this replica has no free delivery slot), it is due now for any relay.
        ``queued``: the seconds the command waited for admission (its first event says so).
        """
        command = self.definition.parse(body)
        body_fingerprint = fingerprint(command.canonical)
        workflow_id, now = self._new_id(), self._clock()
        decision = engine.start(
            self.definition, workflow_id, command.input, now=now, client=client, queued=queued
        )

        def write_new(tx: Transaction) -> Accepted:
            # The hot path: the key is new (a replay was answered before admission, by
            # find_accepted), so everything is sent at once, in one round trip, and checked
            # after. Wrong guess: the batch rolls back, and write() decides the careful way.
            inserted = store.send_command(
                tx, store.Command(idempotency_key, body_fingerprint, workflow_id, now)
            )
            assert decision.send is not None
            message = self._send(tx, workflow_id, decision.send, leased=lease)
            appended = self._append_later(tx, workflow_id, 0, decision.events, now=now)
            try:
                tx.flush()
            except LockTimeout:
                raise _KeyNotFree() from None  # a wait: for the key, or for the log's turn?
            if not inserted.get():
                raise _KeyNotFree()
            appended.get()
            state = engine.after(engine.WorkflowState(workflow_id), decision.events, now=now)
            return Accepted(workflow_id, message.get(), state)

        def write(tx: Transaction) -> Accepted:
            tx.flush()  # the log's turn, if this unit is the batch's first: waited for apart
            try:
                recorded = store.record_command(
                    tx, store.Command(idempotency_key, body_fingerprint, workflow_id, now)
                )
            except LockTimeout:
                # Another request with this key holds it in an open transaction. (A wait for
                # anything else, the log's turn, stays a LockTimeout: busy, retry later.)
                raise CommandInProgress(retry_after=1) from None
            if recorded.workflow_id != workflow_id:
                if recorded.fingerprint != body_fingerprint:
                    raise KeyReusedWithOtherBody()
                return Accepted(recorded.workflow_id, None)
            assert decision.send is not None
            message = self._send(tx, workflow_id, decision.send, leased=lease)
            self._append_later(tx, workflow_id, 0, decision.events, now=now).get()
            state = engine.after(engine.WorkflowState(workflow_id), decision.events, now=now)
            return Accepted(workflow_id, message.get(), state)

        try:
            return self.writer.run(write_new)
        except _KeyNotFree:
            return self.writer.run(write)

    def find_accepted(self, idempotency_key: str, body: Mapping[str, Any]) -> Accepted | None:
        """The workflow a key already started, read without writing anything (a replay is
        answered even when new commands are refused); None if the key is new."""
        command = self.definition.parse(body)
        with self.database.transaction(write=False) as tx:
            recorded = store.find_command(tx, idempotency_key)
        if recorded is None:
            return None
        if recorded.fingerprint != fingerprint(command.canonical):
            raise KeyReusedWithOtherBody()
        return Accepted(recorded.workflow_id, None)

    def _send(
        self, tx: Transaction, workflow_id: str, call: engine.Call, *, leased: bool = True
    ) -> store.Later[store.OutboxMessage]:
        """Enqueue a step's call; ``leased``: to this replica, so that it can deliver it at once."""
        return store.send_enqueue(
            tx,
            stream_id=workflow_id,
            step=call.step,
            destination=call.destination,
            payload=self.sealer.seal(workflow_id, call.to_payload()),
            lease=self.lease if leased else None,
        )

    # --- the store, secrets sealed ----------------------------------------------------------

    def _append(
        self,
        tx: Transaction,
        stream_id: str,
        expected_version: int,
        events: Sequence[engine.NewEvent],
        *,
        now: float,
    ) -> list[int]:
        """Append ``events``, their secret fields sealed, under the log's turn
        (``protools/log.py``), which the group commit's batch took first (see the module's
        docstring; the append takes it too, for a transaction of another kind). A
        :class:`store.VersionConflict` ends the transaction: the caller retries in a new one."""
        return self._append_later(tx, stream_id, expected_version, events, now=now).get()

    def _append_later(
        self,
        tx: Transaction,
        stream_id: str,
        expected_version: int,
        events: Sequence[engine.NewEvent],
        *,
        now: float,
    ) -> store.Later[list[int]]:
        """:meth:`_append`, sent without waiting; the caller reads it (its conflict) before
        it returns."""
        sealed = [
            dataclasses.replace(event, data=self.sealer.seal(stream_id, event.data))
            for event in events
        ]
        appended = store.send_append(tx, stream_id, expected_version, sealed, now=now)
        projection.project(tx, stream_id, events, now=now)  # the read model
        return appended

    def _read(self, tx: Transaction, stream_id: str) -> list[engine.RecordedEvent]:
        return self.open_events(store.read_stream(tx, stream_id))

    def open_events(self, events: Sequence[engine.RecordedEvent]) -> list[engine.RecordedEvent]:
        """``events`` as stored, their secret fields opened."""
        return [
            dataclasses.replace(event, data=self.sealer.open(event.stream_id, event.data))
            for event in events
        ]

    def call_of(self, message: store.OutboxMessage) -> engine.Call:
        """The call ``message`` carries, its secret fields opened."""
        return engine.Call.from_payload(self.sealer.open(message.stream_id, message.payload))

    # --- delivery ------------------------------------------------------------------------------

    def claim_due(self, limit: int, skip: Sequence[str] = ()) -> list[store.OutboxMessage]:
        """Lease up to ``limit`` due messages, none for the destinations in ``skip``."""
        with self.database.transaction() as tx:
            return store.claim_due(tx, self.lease, limit=limit, skip=skip)

    def outbox_summary(self, skip: Sequence[str] = ()) -> store.OutboxSummary:
        with self.database.transaction(write=False) as tx:
            return store.summary(tx, skip=skip)

    def park(
        self, message: store.OutboxMessage, *, reason: str, detail: str, delay: float
    ) -> engine.WorkflowState | None:
        """Hold back the attempt ``message`` claimed, without making it, for ``delay`` seconds
        (see :func:`engine.decide_park`); return the workflow's state after. Fenced like a
        record: only the holder of this attempt's lease parks it (None otherwise)."""

        def write(tx: Transaction, now: float) -> engine.WorkflowState | None:
            lease = store.lock_message(tx, message.id)
            if lease is None or not lease.held_by(self.replica_id, message.attempts):
                return None
            events = self._read(tx, message.stream_id)
            state = engine.fold(message.stream_id, events)
            if state is None or not engine.is_current(state, self.definition, message.step):
                store.complete(tx, message.id)  # a stale message: nothing to wait for
                return state
            decision = engine.decide_park(
                state,
                message.step,
                message.attempts,
                reason=reason,
                detail=detail,
                delay=delay,
                now=now,
            )
            self._append(tx, message.stream_id, state.version, decision.events, now=now)
            store.release_unattempted(tx, message.id, delay=delay)
            return engine.after(state, decision.events, now=now)

        for _ in range(CONFLICT_RETRIES):
            try:
                return self.writer.run(functools.partial(write, now=self._clock()))
            except store.VersionConflict:
                continue
        raise RuntimeError(f"stream {message.stream_id} kept changing under us")

    def extend_leases(self, message_ids: Sequence[int]) -> int:
        """Keep this replica's leases on ``message_ids`` (calls in flight) alive."""
        with self.database.transaction() as tx:
            return store.extend_leases(tx, self.lease, message_ids)

    def may_attempt(self, message: store.OutboxMessage) -> bool:
        """Whether to call for ``message`` now; if not, its fate is committed here."""

        def write(tx: Transaction, now: float) -> bool:
            state = engine.fold(message.stream_id, self._read(tx, message.stream_id))
            if state is None or not engine.is_current(state, self.definition, message.step):
                store.complete(tx, message.id)
                return False
            decision = engine.decide_attempt(
                state, self.definition, message.step, message.attempts, now=now
            )
            if decision is None:
                return True
            self._append(tx, message.stream_id, state.version, decision.events, now=now)
            store.complete(tx, message.id)
            return False

        for _ in range(CONFLICT_RETRIES):
            try:
                return self.writer.run(functools.partial(write, now=self._clock()))
            except store.VersionConflict:
                continue
        return True

    def record(
        self,
        message: store.OutboxMessage,
        outcome: engine.Outcome,
        *,
        replica: str,
        elapsed_ms: float,
        next_replica: str | None = None,
        known: engine.WorkflowState | None = None,
        hold: engine.Hold | None = None,
    ) -> Recorded:
        """Commit one attempt's outcome: its events, the outbox change, the next call; a retry
        with a ``hold`` is parked in the same commit (:func:`engine.decide_outcome`).

        Fenced on the lease: only the holder of this attempt's lease reschedules or ends the
        message. A replica that lost it (its lease ran out mid-call and another replica claimed
        a later attempt) still records what its outcome proves: a success or a definite
        failure is the truth whoever learnt it; a retry only joins the history. Safe to call
        again after a failed commit: an outcome already recorded is not recorded twice.

        ``known``: the workflow's state as this replica's last commit left it (the hot path).
        A success is then recorded without reading the stream or the lease first: a success is
        recorded whoever holds the lease, and if anything was appended since, the append at the
        known version conflicts and the outcome is recorded the long way.
        """
        if known is not None and isinstance(outcome, engine.Succeeded):
            succeeded = outcome
            try:
                return self.writer.run(
                    lambda tx: self._record_success(
                        tx, message, succeeded, known, replica, elapsed_ms
                    )
                )
            except store.VersionConflict:
                pass  # the workflow moved on elsewhere: read it
        for _ in range(CONFLICT_RETRIES):
            now = self._clock()
            try:
                record = functools.partial(
                    self._record,
                    message=message,
                    outcome=outcome,
                    now=now,
                    replica=replica,
                    elapsed_ms=elapsed_ms,
                    next_replica=next_replica,
                    hold=hold,
                )
                return self.writer.run(record)
            except store.VersionConflict:
                continue
        raise RuntimeError(f"stream {message.stream_id} kept changing under us")

    def _record_success(
        self,
        tx: Transaction,
        message: store.OutboxMessage,
        outcome: engine.Succeeded,
        known: engine.WorkflowState,
        replica: str,
        elapsed_ms: float,
    ) -> Recorded:
        if not engine.is_current(known, self.definition, message.step):
            raise store.VersionConflict(message.stream_id, known.version)
        now = self._clock()
        return self._apply(tx, message, outcome, known, now, replica, elapsed_ms, None, held=True)

    def _record(
        self,
        tx: Transaction,
        message: store.OutboxMessage,
        outcome: engine.Outcome,
        now: float,
        replica: str,
        elapsed_ms: float,
        next_replica: str | None,
        hold: engine.Hold | None = None,
    ) -> Recorded:
        lease = store.lock_message(tx, message.id)
        held = lease is not None and lease.held_by(self.replica_id, message.attempts)
        state = engine.fold(message.stream_id, self._read(tx, message.stream_id))
        if state is None or not engine.is_current(state, self.definition, message.step):
            late = engine.Decision()
            if state is not None:
                late = engine.decide_late_outcome(
                    state,
                    message.step,
                    message.attempts,
                    outcome,
                    replica=replica,
                    elapsed_ms=elapsed_ms,
                )
                self._append(tx, message.stream_id, state.version, late.events, now=now)
            if held:
                store.complete(tx, message.id)  # another attempt recorded the step first
            return Recorded(None, False, None, fenced=not held, late=bool(late.events))
        return self._apply(
            tx,
            message,
            outcome,
            state,
            now,
            replica,
            elapsed_ms,
            next_replica,
            held=held,
            hold=hold,
        )

    def _apply(
        self,
        tx: Transaction,
        message: store.OutboxMessage,
        outcome: engine.Outcome,
        state: engine.WorkflowState,
        now: float,
        replica: str,
        elapsed_ms: float,
        next_replica: str | None,
        *,
        held: bool,
        hold: engine.Hold | None = None,
    ) -> Recorded:
        """Decide what the outcome means for the workflow at ``state`` and commit it: the
        lease holder's way, or (``held=False``) the way of a replica that lost its lease."""
        decide = (
            functools.partial(engine.decide_outcome, next_replica=next_replica, hold=hold)
            if held
            else engine.decide_fenced_outcome
        )
        decision = decide(
            state,
            self.definition,
            message.step,
            message.attempts,
            outcome,
            now=now,
            replica=replica,
            elapsed_ms=elapsed_ms,
            random=self._random,
        )
        if decision.retry_at is not None:
            store.reschedule(tx, message.id, delay=decision.retry_at - now)
        elif held or not isinstance(outcome, engine.Retry):
            store.complete(tx, message.id)  # the step's fate is known: whoever holds it is done
        following = (
            self._send(tx, message.stream_id, decision.send) if decision.send is not None else None
        )
        events = decision.events
        appended = self._append_later(tx, message.stream_id, state.version, events, now=now)
        appended.get()  # one round trip for all of the above; a conflict ends the transaction
        after = engine.after(state, decision.events, now=now)
        return Recorded(
            following.get() if following is not None else None,
            decision.finishes,
            decision.retry_at,
            not held,
            state=after,
        )

    # --- queries -------------------------------------------------------------------------------

    def expire_commands(self, retention: float, batch: int = EXPIRY_BATCH) -> int:
        """The command store's retention: forget the commands whose workflow ended more than
        ``retention`` seconds ago, ``batch`` per transaction (short ones: the hot path's
        writers wait for none long); how many. Afterwards a client that sends the same key
        again starts a new command (its username is taken by then: the new workflow fails
        with username-taken). The events stay: the workflow's history is never forgotten."""
        expired = 0
        while True:
            cutoff = self._clock() - retention
            with self.database.transaction() as tx:
                count = store.expire_commands(tx, cutoff=cutoff, batch=batch)
            expired += count
            if count < batch:
                break
        if expired:
            logger.info("metallica.commands_expired", extra={"count": expired})
        return expired

    def load(self, workflow_id: str) -> engine.WorkflowState | None:
        with self.database.transaction(write=False) as tx:
            return engine.fold(workflow_id, self._read(tx, workflow_id))

    def list_workflows(
        self, client: str, *, status: str = "", before: int | None = None, limit: int = 20
    ) -> list[store.WorkflowSummary]:
        """``client``'s workflows, newest first (see :func:`store.list_workflows`)."""
        with self.database.transaction(write=False) as tx:
            return store.list_workflows(tx, client, status=status, before=before, limit=limit)

    def console_workflows(
        self, *, status: str = "", search: str = "", before: int | None = None, limit: int = 50
    ) -> list[store.WorkflowSummary]:
        """Every client's workflows, newest first (see :func:`store.console_workflows`)."""
        with self.database.transaction(write=False) as tx:
            return store.console_workflows(
                tx, status=status, search=search, before=before, limit=limit
            )

    def history(self, workflow_id: str) -> list[engine.RecordedEvent]:
        with self.database.transaction(write=False) as tx:
            return self._read(tx, workflow_id)
