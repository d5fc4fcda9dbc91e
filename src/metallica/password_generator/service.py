"""The password use case: one transaction claims the key, creates the password, stores the answer.

The command store and the password live in the same transaction, so a retry that arrives
before, during or after the first attempt's commit sees either nothing (and does the work) or
the committed outcome (and replays it): a concurrent retry waits on the key's row lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metallica import deadlines, usernames
from metallica.errors import CommandInProgress, KeyReusedWithOtherBody, UsernameTaken
from metallica.faults import FaultPoints
from metallica.fingerprints import fingerprint
from metallica.password_generator.domain import PasswordPolicy, generate_password
from metallica.problems import from_error
from metallica.storage import Database, LockTimeout, Row


@dataclass(frozen=True)
class Created:
    """A password was created (now or by the first request with this key)."""

    username: str
    password: str


class PasswordService:
    def __init__(
        self,
        database: Database,
        policy: PasswordPolicy,
        *,
        faults: FaultPoints | None = None,
        clock: Callable[[], float] = time.time,
        generate: Callable[[PasswordPolicy], str] = generate_password,
    ) -> None:
        self._database = database
        self._policy = policy
        self._faults = faults or FaultPoints()
        self._clock = clock
        self._generate = generate

    def create(self, idempotency_key: str, username: str) -> Created:
        """Create the password of ``username`` under ``idempotency_key``, or replay the outcome.

        Raises :class:`UsernameTaken` (also on replay) and :class:`KeyReusedWithOtherBody`.
        """
        usernames.validate(username)
        deadlines.check()  # nobody waits for this any more: do not start
        body_fingerprint = fingerprint({"username": username})
        self._faults.hit("before_persist")
        try:
            return self._create(idempotency_key, username, body_fingerprint)
        except LockTimeout:
            # A transaction holding this key (or username) is still open: a retry that came
            # during the first attempt's persistence. Say so, rather than pin a connection.
            raise CommandInProgress(retry_after=1) from None

    def _create(self, idempotency_key: str, username: str, body_fingerprint: str) -> Created:
        with self._database.transaction() as tx:
            claimed = tx.fetch_one(
                "insert_command",
                idempotency_key=idempotency_key,
                fingerprint=body_fingerprint,
                username_key=usernames.key(username),
                status=0,
                response="{}",
                created_at=self._clock(),
            )
            if claimed is None:
                stored = tx.fetch_one("get_command", idempotency_key=idempotency_key)
                assert stored is not None
                return _replay(stored, body_fingerprint)
            password = self._generate(self._policy)
            created = tx.fetch_one(
                "insert_password",
                username_key=usernames.key(username),
                username=username,
                password=password,
                created_at=self._clock(),
            )
            status, response = (
                (201, {"username": username}) if created else (409, from_error(UsernameTaken()))
            )
            tx.execute(
                "set_command_outcome",
                idempotency_key=idempotency_key,
                status=status,
                response=json.dumps(response),
            )
            self._faults.hit("during_persist")
        self._faults.hit("after_persist")
        if status == 409:
            raise UsernameTaken()
        return Created(username, password)

    def find(self, username: str) -> Row | None:
        """The stored password row of a username (operators and the invariant checker)."""
        with self._database.transaction(write=False) as tx:
            return tx.fetch_one("get_password", username_key=usernames.key(username))


def _replay(stored: Row, body_fingerprint: str) -> Created:
    if stored["fingerprint"] != body_fingerprint:
        raise KeyReusedWithOtherBody()
    if stored["status"] == 201:
        return Created(stored["username"], stored["password"])
    response: dict[str, Any] = json.loads(stored["response"])
    raise UsernameTaken(response.get("detail"))
