"""PostgreSQL only: services sharing one database, each in its own schema (``schema_url``)."""

from __future__ import annotations

import pytest

from metallica.protools import store
from metallica.storage import SchemaTooOld, open_database
from metallica.storage.migrate import migrate, verify
from metallica.storage.postgres import ensure_schema, schema_url
from tests.storage.conformance import (
    NOW,
    SCHEMAS,
    DatabaseFactory,
    run_concurrently,
    shipped_versions,
)

pytestmark = pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)]
)


def schema_urls(make_db: DatabaseFactory) -> dict[str, str]:
    url = make_db.url("shared")
    for schema in SCHEMAS:
        ensure_schema(url, schema)
        ensure_schema(url, schema)  # idempotent: every replica runs it at start
    return {schema: schema_url(url, schema) for schema in SCHEMAS}


def test_each_schema_is_migrated_and_verified_on_its_own(make_db: DatabaseFactory) -> None:
    urls = schema_urls(make_db)
    protools = make_db.open_url(urls["protools"], "protools")
    generator = make_db.open_url(urls["generator"], "generator", migrated=False)

    verify(protools)
    with pytest.raises(SchemaTooOld):  # protools' schema_migrations is not generator's
        verify(generator)

    assert migrate(generator) == shipped_versions(generator)
    verify(generator)


def test_same_named_tables_in_two_schemas_are_separate(make_db: DatabaseFactory) -> None:
    urls = schema_urls(make_db)
    protools = make_db.open_url(urls["protools"], "protools")
    generator = make_db.open_url(urls["generator"], "generator")

    with protools.transaction() as tx:  # both schemas have a `commands` table
        store.record_command(tx, store.Command("key-1", "fp", "wf-1", NOW))

    with generator.transaction(write=False) as tx:
        assert tx.fetch_one("get_command", idempotency_key="key-1") is None
    with protools.transaction(write=False) as tx:
        assert store.find_command(tx, "key-1") is not None


def test_replicas_of_every_service_migrate_one_database_together(
    make_db: DatabaseFactory,
) -> None:
    urls = schema_urls(make_db)

    def migrator(index: int) -> tuple[str, list[int]]:
        schema = SCHEMAS[index % len(SCHEMAS)]
        database = open_database(urls[schema], schema, pool_size=1)
        try:
            return schema, migrate(database)
        finally:
            database.close()

    results = run_concurrently(migrator, 3 * len(SCHEMAS))

    for schema in SCHEMAS:
        database = make_db.open_url(urls[schema], schema, migrated=False)
        applied = sorted(v for name, versions in results if name == schema for v in versions)
        assert applied == shipped_versions(database), schema
        verify(database)
