"""Queries are written once; the dialects' differences are named fragments, filled per dialect."""

from __future__ import annotations

import pytest

from metallica.storage.queries import FRAGMENTS, load_queries, parse_queries, render

SCHEMAS = ("protools", "generator", "mailer")


def test_parameters_take_each_drivers_style_and_casts_are_left_alone() -> None:
    sql = "SELECT CAST(:ids AS json), :a::text, '12:30' FROM t WHERE x = :b_2 {for_update}"
    assert (
        render(sql, "sqlite")
        == "SELECT CAST(:ids AS json), :a::text, '12:30' FROM t WHERE x = :b_2 "
    )
    assert render(sql, "postgres") == (
        "SELECT CAST(%(ids)s AS json), %(a)s::text, '12:30' FROM t WHERE x = %(b_2)s FOR UPDATE"
    )


def test_both_dialects_name_the_same_fragments() -> None:
    assert set(FRAGMENTS["sqlite"]) == set(FRAGMENTS["postgres"])


def test_an_unknown_fragment_is_an_error_not_a_silent_hole() -> None:
    with pytest.raises(KeyError, match="nowhere"):
        render("SELECT {nowhere}", "postgres")


@pytest.mark.parametrize("schema", SCHEMAS)
def test_every_query_renders_for_both_dialects_with_the_same_names(schema: str) -> None:
    sqlite, postgres = load_queries("sqlite", schema), load_queries("postgres", schema)
    assert set(sqlite) == set(postgres)
    for name in sqlite:
        assert "{" not in sqlite[name], name
        assert "{" not in postgres[name], name
        assert "%(" not in sqlite[name], name


def test_a_query_defined_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
