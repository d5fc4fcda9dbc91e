"""The read models' command: `metallica projections rebuild [--check]`."""

from __future__ import annotations

import click


@click.group()
def projections() -> None:
    """protools' read models, kept from its events: rebuild them, or check them against the
    events (the workflows listing: GET /v1/workflows)."""


@projections.command("rebuild")
@click.option(
    "--database-url",
    envvar="METALLICA_DATABASE_URL",
    required=True,
    help="protools' database [METALLICA_DATABASE_URL]",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Only compare the live model with the one the events give; exit 1 if they differ.",
)
def rebuild(database_url: str, check_only: bool) -> None:
    """Write the workflows read model afresh from protools' events alone, and say what the
    live one had otherwise (safe while replicas run: no event is recorded meanwhile)."""
    import logging

    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    from metallica.protools import projection
    from metallica.storage import open_database
    from metallica.storage.migrate import verify

    database = open_database(database_url, "protools", pool_size=1)
    try:
        verify(database)
        click.echo("reading the events ...", err=True)
        with database.transaction() as tx:
            found = projection.compare(tx)[0] if check_only else projection.rebuild(tx)
    finally:
        database.close()
    differences = (
        f"{len(found.missing)} missing, {len(found.extra)} extra, {len(found.changed)} changed"
    )
    for name in ("missing", "extra", "changed"):
        for workflow_id in getattr(found, name)[:10]:
            click.echo(f"  {name}: {workflow_id}", err=True)
    if check_only:
        click.echo(f"workflows: {found.rows} from the events; the live model: {differences}")
        if not found.identical:
            raise SystemExit(1)
        return
    click.echo(f"workflows: {found.rows} rebuilt from the events; the live model had {differences}")
