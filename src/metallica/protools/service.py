"""protools use cases. The only place that opens transactions.

Each use case reads a workflow's events, asks the pure engine what to do, and commits the new
events, the outbox change and (for a new command) the command record in one transaction. A
version conflict (another replica wrote first) re-reads and decides again.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from metallica import addresses, usernames
from metallica.errors import InvalidInput, InvalidUsername, KeyReusedWithOtherBody
from metallica.protools import engine, store
from metallica.protools.password_workflow import workflow_input
from metallica.storage import Database, Transaction
from metallica.web.requests import fingerprint

CONFLICT_RETRIES = 8


@dataclass(frozen=True)
class Accepted:
    """A command's workflow; ``message`` is its first call, leased to us, when it is new."""

    workflow_id: str
    message: store.OutboxMessage | None


@dataclass(frozen=True)
class Recorded:
    """An attempt's outcome is committed; ``message``: the next step's call, leased to us."""

    message: store.OutboxMessage | None
    finished: bool
    retry_at: float | None


def parse_command(body: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(username, email)`` from a password-creation body, or a 422."""
    unknown = set(body) - {"username", "email"}
    if unknown:
        raise InvalidInput(f"unknown fields: {sorted(unknown)}", field=sorted(unknown)[0])
    username, email = body.get("username"), body.get("email")
    if not isinstance(username, str):
        raise InvalidUsername("'username' is required and must be a string", field="username")
    usernames.validate(username)
    if email is not None:
        if not isinstance(email, str):
            raise InvalidInput("'email' must be a string", field="email")
        addresses.validate(email, "email")
    return username, email


class WorkflowService:
    def __init__(
        self,
        database: Database,
        definition: engine.WorkflowDefinition,
        *,
        replica_id: str,
        lease_seconds: float,
        mail_domain: str,
        clock: Callable[[], float] = time.time,
        random_unit: Callable[[], float] = random.random,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.database = database
        self.definition = definition
        self.replica_id = replica_id
        self._lease_seconds = lease_seconds
        self._mail_domain = mail_domain
        self._clock = clock
        self._random = random_unit
        self._new_id = new_id

    def _lease(self, now: float) -> store.Lease:
        return store.Lease(self.replica_id, now + self._lease_seconds)

    # --- commands ------------------------------------------------------------------------------

    def accept(self, idempotency_key: str, body: Mapping[str, Any]) -> Accepted:
        """Start a workflow for a client command, or find the one this key already started."""
        username, email = parse_command(body)
        body_fingerprint = fingerprint({"username": username, "email": email})
        workflow_id, now = self._new_id(), self._clock()
        decision = engine.start(
            self.definition,
            workflow_id,
            workflow_input(username, email, self._mail_domain),
            now=now,
        )
        with self.database.transaction() as tx:
            command = store.record_command(
                tx, store.Command(idempotency_key, body_fingerprint, workflow_id, now)
            )
            if command.workflow_id != workflow_id:
                if command.fingerprint != body_fingerprint:
                    raise KeyReusedWithOtherBody()
                return Accepted(command.workflow_id, None)
            store.append(tx, workflow_id, 0, decision.events, now=now)
            assert decision.send is not None
            message = self._send(tx, workflow_id, decision.send, now)
        return Accepted(workflow_id, message)

    def _send(
        self, tx: Transaction, workflow_id: str, call: engine.Call, now: float
    ) -> store.OutboxMessage:
        """Enqueue a step's call, leased to this replica so that it can deliver it at once."""
        step = call.idempotency_key.rsplit("/", 1)[-1]
        payload = call.to_payload()
        message_id = store.enqueue(
            tx,
            stream_id=workflow_id,
            step=step,
            destination=call.destination,
            payload=payload,
            now=now,
            lease=self._lease(now),
        )
        return store.OutboxMessage(
            message_id, workflow_id, step, call.destination, payload, 1, now, now
        )

    # --- delivery ------------------------------------------------------------------------------

    def claim_due(self, limit: int) -> list[store.OutboxMessage]:
        now = self._clock()
        with self.database.transaction() as tx:
            return store.claim_due(tx, self._lease(now), now=now, limit=limit)

    def next_due_time(self) -> float | None:
        with self.database.transaction(write=False) as tx:
            return store.next_due_time(tx)

    def may_attempt(self, message: store.OutboxMessage) -> bool:
        """Whether to call for ``message`` now; if not, its fate is committed here."""
        for _ in range(CONFLICT_RETRIES):
            now = self._clock()
            with self.database.transaction() as tx:
                state = engine.fold(message.stream_id, store.read_stream(tx, message.stream_id))
                if state is None or not engine.is_current(state, self.definition, message.step):
                    store.complete(tx, message.id)
                    return False
                decision = engine.decide_attempt(state, self.definition, message.step, now=now)
                if decision is None:
                    return True
                try:
                    store.append(tx, message.stream_id, state.version, decision.events, now=now)
                except store.VersionConflict:
                    continue
                store.complete(tx, message.id)
                return False
        return True

    def record(
        self,
        message: store.OutboxMessage,
        outcome: engine.Outcome,
        *,
        replica: str,
        elapsed_ms: float,
        next_replica: str | None = None,
    ) -> Recorded:
        """Commit one attempt's outcome: its events, the outbox change, the next call."""
        for _ in range(CONFLICT_RETRIES):
            now = self._clock()
            try:
                with self.database.transaction() as tx:
                    state = engine.fold(message.stream_id, store.read_stream(tx, message.stream_id))
                    if state is None or not engine.is_current(state, self.definition, message.step):
                        store.complete(tx, message.id)  # another replica recorded it first
                        return Recorded(None, False, None)
                    decision = engine.decide_outcome(
                        state,
                        self.definition,
                        message.step,
                        message.attempts,
                        outcome,
                        now=now,
                        replica=replica,
                        elapsed_ms=elapsed_ms,
                        random=self._random,
                        next_replica=next_replica,
                    )
                    store.append(tx, message.stream_id, state.version, decision.events, now=now)
                    if decision.retry_at is not None:
                        store.reschedule(tx, message.id, available_at=decision.retry_at)
                    else:
                        store.complete(tx, message.id)
                    following = (
                        self._send(tx, message.stream_id, decision.send, now)
                        if decision.send
                        else None
                    )
                return Recorded(following, decision.finishes, decision.retry_at)
            except store.VersionConflict:
                continue
        raise RuntimeError(f"stream {message.stream_id} kept changing under us")

    # --- queries -------------------------------------------------------------------------------

    def load(self, workflow_id: str) -> engine.WorkflowState | None:
        with self.database.transaction(write=False) as tx:
            return engine.fold(workflow_id, store.read_stream(tx, workflow_id))

    def history(self, workflow_id: str) -> list[store.RecordedEvent]:
        with self.database.transaction(write=False) as tx:
            return store.read_stream(tx, workflow_id)
