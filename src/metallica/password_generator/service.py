"""The password use case: one transaction claims the key, creates the password, stores the answer.

The command store and the password live in the same transaction, so a retry that arrives
before, during or after the first attempt's commit sees either nothing (and does the work) or
the committed outcome (and replays it): a concurrent retry waits on the key's row lock.

No password is stored in clear (see :mod:`.sealing`): the password row keeps its keyed
digest, for good; the command's row keeps a sealed copy for replays of its key, until the
record's retention ends (``created_at + retention``). The expiry sweep then drops the copy and
keeps the record, so a later replay of the key is told, precisely, that its answer is gone
(410 ``idempotency-record-expired``) rather than taken for a new request.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metallica import deadlines, usernames
from metallica.config import default
from metallica.errors import (
    CommandInProgress,
    IdempotencyRecordExpired,
    KeyReusedWithOtherBody,
    MetallicaError,
    UsernameTaken,
)
from metallica.faults import FaultPoints
from metallica.fingerprints import fingerprint
from metallica.password_generator.domain import PasswordPolicy, generate_password
from metallica.password_generator.sealing import GeneratorKeyring, SealBroken, UnknownKeyId
from metallica.problems import from_error
from metallica.storage import Database, LockTimeout, Row

logger = logging.getLogger(__name__)

DEFAULT_RETENTION: float = default("idempotency-retention")
SWEEP_BATCH = 500


class ReplayUnreadable(MetallicaError):
    """The stored answer of this Idempotency-Key cannot be read back right now (its key is not
    configured, or the record is damaged); retry later."""

    code = "replay-unreadable"
    status = 500
    title = "Stored answer unreadable"


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
        keyring: GeneratorKeyring,
        *,
        retention: float = DEFAULT_RETENTION,
        faults: FaultPoints | None = None,
        clock: Callable[[], float] = time.time,
        generate: Callable[[PasswordPolicy], str] = generate_password,
    ) -> None:
        self._database = database
        self._policy = policy
        self._keyring = keyring
        self._retention = retention
        self._faults = faults or FaultPoints()
        self._clock = clock
        self._generate = generate

    def create(self, idempotency_key: str, username: str) -> Created:
        """Create the password of ``username`` under ``idempotency_key``, or replay the outcome.

        Raises :class:`UsernameTaken` (also on replay), :class:`KeyReusedWithOtherBody` and,
        for a replay past the record's retention, :class:`IdempotencyRecordExpired`.
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
        username_key = usernames.key(username)
        # Generated, digested and sealed before the transaction: no crypto under the write lock
        # (a replay wastes these microseconds, a first request saves them from the lock).
        password = self._generate(self._policy)
        digest = self._keyring.digest(username_key, password)
        sealed = self._keyring.seal(
            password, idempotency_key=idempotency_key, username_key=username_key
        )
        with self._database.transaction() as tx:
            claimed = tx.fetch_one(
                "insert_command",
                idempotency_key=idempotency_key,
                fingerprint=body_fingerprint,
                username_key=username_key,
                status=0,
                response="{}",
                created_at=self._clock(),
            )
            if claimed is None:
                stored = tx.fetch_one("get_command", idempotency_key=idempotency_key)
                assert stored is not None
                return self._replay(stored, idempotency_key, body_fingerprint)
            created = tx.fetch_one(
                "insert_password",
                username_key=username_key,
                username=username,
                digest=digest.value,
                digest_key_id=digest.key_id,
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
                sealed=sealed.blob if created else None,
                seal_key_id=sealed.key_id if created else None,
            )
            self._faults.hit("during_persist")
        self._faults.hit("after_persist")
        if status == 409:
            raise UsernameTaken()
        return Created(username, password)

    def _replay(self, stored: Row, idempotency_key: str, body_fingerprint: str) -> Created:
        if stored["fingerprint"] != body_fingerprint:
            raise KeyReusedWithOtherBody()
        response: dict[str, Any] = json.loads(stored["response"])
        if stored["status"] != 201:
            raise UsernameTaken(response.get("detail"))
        expired = stored["created_at"] + self._retention <= self._clock()
        if stored["sealed"] is None or expired:
            raise IdempotencyRecordExpired(retention_seconds=round(self._retention))
        try:
            password = self._keyring.open(
                stored["seal_key_id"],
                stored["sealed"],
                idempotency_key=idempotency_key,
                username_key=stored["username_key"],
            )
        except (UnknownKeyId, SealBroken) as error:
            # The key ids are no secret; the key, the copy and the password never show.
            logger.error(
                "metallica.generator.replay_unreadable",
                extra={"reason": str(error), "key_id": stored["seal_key_id"]},
            )
            raise ReplayUnreadable() from None
        return Created(str(response["username"]), password)

    def find(self, username: str) -> Row | None:
        """The stored digest row of a username (operators and the invariant checker)."""
        with self._database.transaction(write=False) as tx:
            return tx.fetch_one("get_password", username_key=usernames.key(username))

    def verify(self, username: str, password: str) -> bool:
        """Whether ``password`` is the one the generator created for ``username``."""
        row = self.find(username)
        return row is not None and self._keyring.verify(
            row["username_key"], password, row["digest_key_id"], row["digest"]
        )

    # --- upkeep -------------------------------------------------------------------------------

    def expire_sealed_copies(self, batch: int = SWEEP_BATCH) -> int:
        """Drop the sealed copies of records past their retention, ``batch`` per transaction
        (short ones: the hot path's writers wait for none long); return how many."""
        expired = 0
        while True:
            cutoff = self._clock() - self._retention
            with self._database.transaction() as tx:
                count = tx.execute("expire_sealed_copies", cutoff=cutoff, batch=batch)
            expired += count
            if count < batch:
                break
        if expired:
            logger.info("metallica.generator.sealed_copies_expired", extra={"count": expired})
        return expired

    def seal_legacy_rows(self, batch: int = SWEEP_BATCH) -> int:
        """Seal the passwords stored in clear before the digests (migration 0002): digest
        each, seal a copy for its creating record if still within retention, clear it. Run at
        start, before serving; return how many. Replicas starting together share the work."""
        sealed = 0
        while True:
            cutoff = self._clock() - self._retention
            with self._database.transaction() as tx:
                rows = tx.fetch_all("legacy_passwords", batch=batch)
                clear = {row["username_key"]: str(row["legacy_password"]) for row in rows}
                replays = (
                    tx.fetch_all("legacy_replays", strings=json.dumps(list(clear)), cutoff=cutoff)
                    if clear
                    else []
                )
                for record in replays:
                    copy = self._keyring.seal(
                        clear[record["username_key"]],
                        idempotency_key=record["idempotency_key"],
                        username_key=record["username_key"],
                    )
                    tx.execute(
                        "seal_legacy_replay",
                        idempotency_key=record["idempotency_key"],
                        sealed=copy.blob,
                        seal_key_id=copy.key_id,
                    )
                for username_key, password in clear.items():
                    digest = self._keyring.digest(username_key, password)
                    tx.execute(
                        "seal_legacy_password",
                        username_key=username_key,
                        digest=digest.value,
                        digest_key_id=digest.key_id,
                    )
            sealed += len(clear)
            if len(clear) < batch:
                break
        if sealed:  # their clear text may linger in free pages and old WAL until reused
            logger.warning(
                "metallica.generator.legacy_passwords_sealed",
                extra={"count": sealed, "advice": "VACUUM the database to scrub free space"},
            )
        return sealed
