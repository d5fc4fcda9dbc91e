"""Storage fixtures: ``make_db`` opens (migrated) databases on the test's backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.storage.conformance import DatabaseFactory


@pytest.fixture
def make_db(backend: str, database_url: Callable[[str], str]) -> Iterator[DatabaseFactory]:
    """Open databases on ``backend``; every one is closed when the test ends."""
    factory = DatabaseFactory(backend, database_url)
    try:
        yield factory
    finally:
        factory.close_all()
