"""Shutdown in order: a service closes its database only once its background loops have
stopped, and nothing they handed to a thread still runs a transaction.

The bug this guards against crashed a test worker with a segmentation fault: the relay's
recovery loop was cancelled while its ``claim_due`` ran in a thread, the cancellation returned
at once, and the database was closed under the running statement. Here every transaction is
made slow (20 to 50 ms, the loops run back to back), the service is shut down while one of its
loops is inside a transaction, and the database records how many transactions were still under
way when ``close()`` was called: it must be none. Many times, at varied instants, on both
backends, for both services that have background loops.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.applications import Starlette

from metallica.password_generator.http import create_app as create_generator
from metallica.password_generator.settings import GeneratorSettings
from metallica.protools.http import create_app as create_protools
from metallica.protools.settings import ProtoolsSettings
from metallica.storage import Database, Transaction
from metallica.web import app as web_app
from tests.conftest import MakeUrl
from tests.service.conftest import TestClient

ROUNDS = 6
WAIT = 10.0


class SlowTransactions:
    """A database whose every transaction lingers 20 to 50 ms once open, and that notes how
    many transactions were under way when it was closed."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self.dialect, self.schema = database.dialect, database.schema
        self.listens = database.listens
        self.listen = database.listen
        self.inside = threading.Event()
        self.under_way = 0
        self.under_way_at_close: int | None = None
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Transaction]:
        with self._database.transaction(write=write) as tx:
            with self._lock:
                self.under_way += 1
            try:
                self.inside.set()
                time.sleep(random.uniform(0.02, 0.05))
                yield tx
            finally:
                with self._lock:
                    self.under_way -= 1

    def close(self) -> None:
        with self._lock:
            self.under_way_at_close = self.under_way
        self._database.close()


def protools_app(url: str) -> Starlette:
    return create_protools(
        ProtoolsSettings(
            url,
            "test-token",
            generator_urls=("http://127.0.0.1:9",),
            mailer_urls=("http://127.0.0.1:9",),
            poll_interval=0.01,  # the recovery loop's rounds, back to back
        )
    )


def generator_app(url: str) -> Starlette:
    return create_generator(GeneratorSettings(url, "test-token", sweep_interval=0.01))


SERVICES: dict[str, tuple[str, Callable[[str], Starlette]]] = {
    "protools": ("protools", protools_app),
    "generator": ("generator", generator_app),
}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_closes_its_database_only_after_its_loops_left_their_transactions(
    service: str,
    database_url: MakeUrl,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    opened: list[SlowTransactions] = []
    open_migrated = web_app.open_migrated

    def slow_open_migrated(url: str, schema: str, **options: Any) -> SlowTransactions:
        database = SlowTransactions(open_migrated(url, schema, **options))
        opened.append(database)
        return database

    monkeypatch.setattr(web_app, "open_migrated", slow_open_migrated)
    _, make_app = SERVICES[service]
    url = database_url(service)
    with caplog.at_level(logging.WARNING):
        for _ in range(ROUNDS):
            with TestClient(make_app(url)):
                database = opened[-1]
                assert database.inside.wait(WAIT), "no background loop opened a transaction"
                time.sleep(random.uniform(0, 0.03))  # shut down at a varied instant
            assert database.under_way_at_close == 0, (
                f"{database.under_way_at_close} transaction(s) still under way at close()"
            )
    assert len(opened) == ROUNDS
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert failures == []
