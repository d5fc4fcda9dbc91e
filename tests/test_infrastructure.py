"""The test infrastructure itself: a clean environment and fresh databases on every backend."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.pg_admin import database_name, with_database


def test_no_metallica_variable_leaks_into_tests() -> None:
    assert [name for name in os.environ if name.startswith("METALLICA_")] == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@127.0.0.1:5432/postgres", "postgresql://u@127.0.0.1:5432/t_1"),
        ("postgresql://u:p@h/postgres?sslmode=disable", "postgresql://u:p@h/t_1?sslmode=disable"),
        ("postgres://h", "postgres://h/t_1"),
        ("postgresql:///postgres?host=%2Ftmp%2Fs&dbname=x", "postgresql:///t_1?host=%2Ftmp%2Fs"),
    ],
)
def test_with_database_points_a_url_at_another_database(url: str, expected: str) -> None:
    assert with_database(url, "t_1") == expected
    assert database_name(expected) == "t_1"


def test_database_url_gives_fresh_databases_and_the_same_one_for_a_name(
    backend: str, database_url: Callable[[str], str]
) -> None:
    first, second = database_url("one"), database_url("two")

    assert first != second
    assert database_url("one") == first
    assert first.startswith({"sqlite": "sqlite:///", "postgres": "postgresql://"}[backend])
