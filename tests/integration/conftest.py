"""Real processes: the three services started by :class:`metallica.stack.LocalStack`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metallica.client import ProtoolsClient
from metallica.mail_sender.maildir import Maildir
from metallica.stack import LocalStack
from metallica.storage import Row, open_database

TOKEN = "integration-token"

# Fast healing for tests: short leases and backoff, frequent polling.
FAST_ENV = {
    "METALLICA_LEASE_SECONDS": "2",
    "METALLICA_POLL_INTERVAL": "0.2",
    "METALLICA_RETRY_INITIAL": "0.1",
    "METALLICA_RETRY_MAX": "1",
    "METALLICA_CALL_TIMEOUT": "3",
    "METALLICA_LOG_LEVEL": "WARNING",
}


class Observed:
    """What a test reads back from a stack: stored passwords, commands, mails."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack

    def _generator(self, query: str, **params: str) -> Row | None:
        database = open_database(self.stack.database_url("generator"), "generator", pool_size=1)
        try:
            with database.transaction(write=False) as tx:
                return tx.fetch_one(query, **params)
        finally:
            database.close()

    def holds_password(self, username: str, password: str) -> bool:
        """Whether the generator's stored digest for ``username`` is that of ``password``."""
        row = self._generator("get_password", username_key=username.lower())
        keys = self.stack.generator_keys()
        return row is not None and keys.verify(
            row["username_key"], password, row["digest_key_id"], row["digest"]
        )

    def password_count(self) -> int:
        row = self._generator("count_passwords")
        assert row is not None
        return int(row["n"])

    def generator_command_count(self) -> int:
        row = self._generator("count_commands")
        assert row is not None
        return int(row["n"])

    def mails(self) -> list[str]:
        return [path.read_text() for path in Maildir(self.stack.maildir).mails()]


StackFactory = Callable[..., LocalStack]


@pytest.fixture
def stack_factory(tmp_path: Path, database_url: Callable[[str], str]) -> Iterator[StackFactory]:
    """``make(replicas=1, **env)``: start a stack on the test's backend; stopped at the end."""
    started: list[LocalStack] = []

    def make(replicas: int = 1, faults: bool = True, **env: str) -> LocalStack:
        stack = LocalStack(
            tmp_path / f"stack{len(started)}",
            TOKEN,
            replicas,
            {service: database_url(service) for service in ("protools", "generator", "mailer")},
            extra_env={**FAST_ENV, "METALLICA_FAULTS": "1" if faults else "0", **env},
        )
        started.append(stack)
        stack.start()
        return stack

    try:
        yield make
    finally:
        for stack in started:
            stack.stop()


@pytest.fixture
def stack(stack_factory: StackFactory) -> LocalStack:
    return stack_factory()


@pytest.fixture
def client(stack: LocalStack) -> Iterator[ProtoolsClient]:
    with ProtoolsClient(stack.urls("protools")[0], TOKEN) as protools:
        yield protools


@pytest.fixture
def observed(stack: LocalStack) -> Observed:
    return Observed(stack)
