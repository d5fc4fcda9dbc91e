"""History for the bench: N completed password workflows written straight into the stores.

Each seeded workflow has what a real one leaves behind: protools' four events and its command
record, the generator's password and command record, the mailer's record. They go in through
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
from metallica.protools import engine, password_workflow
from metallica.storage import open_database

BATCH = 20_000
Progress = Callable[[str], None]


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def _protools_rows(
    prefix: str, start: int, stop: int, now: float
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
                    {
                        "step": password_workflow.GENERATE,
                        **common,
                        "result": {"username": username, "password": password},
                    }
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


def preload(urls: dict[str, str], count: int, progress: Progress) -> float:
    """Seed ``count`` completed workflows into the stores at ``urls`` (by service); return the
    seconds it took."""
    started, now = time.monotonic(), time.time()
    prefix = f"pre{uuid.uuid4().hex[:6]}"
    protools = open_database(urls["protools"], "protools", pool_size=1)
    generator = open_database(urls["generator"], "generator", pool_size=1)
    mailer = open_database(urls["mailer"], "mailer", pool_size=1)
    try:
        for start, stop in _batches(count):
            events, commands = _protools_rows(prefix, start, stop, now)
            with protools.transaction() as tx:
                tx.copy_rows(
                    "events", ("stream_id", "version", "type", "data", "recorded_at"), events
                )
                tx.copy_rows(
                    "commands",
                    ("idempotency_key", "fingerprint", "workflow_id", "created_at"),
                    commands,
                )
            usernames = [f"{prefix}-{number}" for number in range(start, stop)]
            with generator.transaction() as tx:
                tx.copy_rows(
                    "passwords",
                    ("username_key", "username", "password", "created_at"),
                    [
                        (u.lower(), u, f"preloaded-{n:08d}-Aa1!", now)
                        for n, u in zip(range(start, stop), usernames, strict=True)
                    ],
                )
                tx.copy_rows(
                    "commands",
                    (
                        "idempotency_key",
                        "fingerprint",
                        "username_key",
                        "status",
                        "response",
                        "created_at",
                    ),
                    [
                        (
                            f"wf-{prefix}-{n}/generate_password",
                            fingerprint({"username": u}),
                            u.lower(),
                            201,
                            _dumps({"username": u}),
                            now,
                        )
                        for n, u in zip(range(start, stop), usernames, strict=True)
                    ],
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
