"""History for the bench: N completed password workflows written straight into the stores.

Each seeded workflow has what a real one leaves behind: protools' four events and its command
record, the generator's password (its keyed digest) and command record (with the sealed copy of
the password, under the stack's generator keys), the mailer's record. They go in through
the storage layer's bulk path (:meth:`~metallica.storage.ports.Transaction.copy_rows`: COPY on
PostgreSQL), in batches, with a progress line. The mails themselves are not written to the
Maildir: a million files would measure the file system, and the mailer never reads old ones.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from metallica.fingerprints import fingerprint
from metallica.password_generator.sealing import GeneratorKeyring
from metallica.protools import engine, password_workflow
from metallica.protools.sealing import FieldSealer, ProtoolsKeyring
from metallica.storage import open_database

BATCH = 20_000
Progress = Callable[[str], None]


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def _protools_rows(
    prefix: str, start: int, stop: int, now: float, sealer: FieldSealer
) -> tuple[list[Sequence[Any]], list[Sequence[Any]]]:
    events: list[Sequence[Any]] = []
    commands: list[Sequence[Any]] = []
    for number in range(start, stop):
        workflow_id = str(uuid.UUID(int=number, version=4))
        username = f"{prefix}-{number}"
        workflow_input = password_workflow.workflow_input(username, None, "example.com")
        common = {"attempt": 1, "replica": "preload", "elapsed_ms": 1.0}
        password = f"preloaded-{number:08d}-Aa1!"
        events += [
            (
                workflow_id,
                1,
                engine.STARTED,
                _dumps(
                    {
                        "workflow": password_workflow.NAME,
                        "input": workflow_input,
                        "deadline": now + 300,
                    }
                ),
                now,
            ),
            (
                workflow_id,
                2,
                engine.SUCCEEDED,
                _dumps(
                    sealer.seal(
                        workflow_id,
                        {
                            "step": password_workflow.GENERATE,
                            **common,
                            "result": {"username": username, "password": password},
                        },
                    )
                ),
                now,
            ),
            (
                workflow_id,
                3,
                engine.SUCCEEDED,
                _dumps(
                    {"step": password_workflow.MAIL, **common, "result": {"mail_id": f"m{number}"}}
                ),
                now,
            ),
            (workflow_id, 4, engine.COMPLETED, "{}", now),
        ]
        canonical = {"username": username, "email": None}
        commands.append((f"{prefix}-key-{number}", fingerprint(canonical), workflow_id, now))
    return events, commands


def _batches(count: int) -> Iterator[tuple[int, int]]:
    for start in range(0, count, BATCH):
        yield start, min(count, start + BATCH)


def _generator_rows(
    prefix: str, start: int, stop: int, now: float, keyring: GeneratorKeyring
) -> tuple[list[Sequence[Any]], list[Sequence[Any]]]:
    passwords: list[Sequence[Any]] = []
    commands: list[Sequence[Any]] = []
    for number in range(start, stop):
        username = f"{prefix}-{number}"
        username_key = username.lower()
        password = f"preloaded-{number:08d}-Aa1!"
        key = f"wf-{prefix}-{number}/generate_password"
        digest = keyring.digest(username_key, password)
        sealed = keyring.seal(password, idempotency_key=key, username_key=username_key)
        passwords.append((username_key, username, digest.value, digest.key_id, now))
        commands.append(
            (
                key,
                fingerprint({"username": username}),
                username_key,
                201,
                _dumps({"username": username}),
                sealed.blob,
                sealed.key_id,
                now,
            )
        )
    return passwords, commands


def preload(
    urls: dict[str, str],
    count: int,
    progress: Progress,
    *,
    generator_keys: GeneratorKeyring,
    protools_keys: ProtoolsKeyring,
) -> float:
    """Seed ``count`` completed workflows into the stores at ``urls`` (by service), the
    secrets sealed under the stack's keys; return the seconds it took."""
    sealer = FieldSealer(protools_keys, password_workflow.SECRET_FIELDS)
    started, now = time.monotonic(), time.time()
    prefix = f"pre{uuid.uuid4().hex[:6]}"
    protools = open_database(urls["protools"], "protools", pool_size=1)
    generator = open_database(urls["generator"], "generator", pool_size=1)
    mailer = open_database(urls["mailer"], "mailer", pool_size=1)
    try:
        for start, stop in _batches(count):
            events, commands = _protools_rows(prefix, start, stop, now, sealer)
            with protools.transaction() as tx:
                tx.copy_rows(
                    "events", ("stream_id", "version", "type", "data", "recorded_at"), events
                )
                tx.copy_rows(
                    "commands",
                    ("idempotency_key", "fingerprint", "workflow_id", "created_at"),
                    commands,
                )
            passwords, generator_commands = _generator_rows(
                prefix, start, stop, now, generator_keys
            )
            with generator.transaction() as tx:
                tx.copy_rows(
                    "passwords",
                    ("username_key", "username", "digest", "digest_key_id", "created_at"),
                    passwords,
                )
                tx.copy_rows(
                    "commands",
                    (
                        "idempotency_key",
                        "fingerprint",
                        "username_key",
                        "status",
                        "response",
                        "sealed",
                        "seal_key_id",
                        "created_at",
                    ),
                    generator_commands,
                )
            with mailer.transaction() as tx:
                tx.copy_rows(
                    "mails",
                    ("idempotency_key", "fingerprint", "mail_id", "created_at", "delivered_at"),
                    [
                        (
                            f"wf-{prefix}-{n}/send_mail",
                            fingerprint({"n": n}),
                            f"{prefix}m{n}",
                            now,
                            now,
                        )
                        for n in range(start, stop)
                    ],
                )
            elapsed = time.monotonic() - started
            progress(f"preloading history: {stop:,}/{count:,} workflows ({elapsed:.0f} s)")
        for database in (protools, generator, mailer):  # fresh statistics for the planner
            with database.transaction() as tx:
                tx.run_script("ANALYZE")
    finally:
        for database in (protools, generator, mailer):
            database.close()
    return time.monotonic() - started
