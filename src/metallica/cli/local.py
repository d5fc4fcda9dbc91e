"""`metallica up` (the whole stack as local processes) and `metallica demo`."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path

import click

from metallica.cli.common import DEFAULT_DATA_DIR, one_line, token_from
from metallica.services import NAMES


def _database_urls(database_url: str | None) -> dict[str, str]:
    """Per-service URLs: one PostgreSQL database, a schema per service; or SQLite files."""
    if not database_url:
        return {}
    if database_url.startswith("sqlite"):
        raise click.UsageError("--database-url takes a PostgreSQL URL; SQLite is the default")
    from metallica.services import schema_urls
    from metallica.storage import check_url

    check_url(database_url)
    try:
        return schema_urls(database_url)
    except Exception as error:
        raise click.ClickException(f"cannot prepare the database: {one_line(error)}") from None


@click.command()
@click.option(
    "--replicas",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Replicas of each service.",
)
@click.option(
    "--database-url",
    envvar="METALLICA_DATABASE_URL",
    help="A PostgreSQL database for all three (a schema each); default: SQLite files.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Databases, Maildir, logs and the API token.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535 - 216),
    default=8000,
    show_default=True,
    help="protools' first port; generators at +100, mailers at +200; 0: any free ports.",
)
def up(replicas: int, database_url: str | None, data_dir: Path, port: int) -> None:
    """Run the whole stack as local processes until Ctrl-C.

    A service that dies is reported at once and started again. The API token is written to
    DATA_DIR/api-token once the stack answers (never for a stack that failed to start).
    """
    from metallica.listeners import PortUnavailable
    from metallica.stack import LocalStack

    token = (
        os.environ.get("METALLICA_API_TOKEN") or token_from(data_dir) or secrets.token_urlsafe(24)
    )
    urls = _database_urls(database_url)

    def report(line: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True)

    stack = LocalStack(
        data_dir, token, replicas, urls, base_port=port, supervise=True, report=report
    )
    click.echo(f"starting {replicas} replica(s) of each service ...")
    try:
        stack.start()
    except PortUnavailable as error:
        stack.stop()
        raise click.ClickException(f"{error.detail} (choose another with --port)") from None
    except RuntimeError as error:  # a service died at start, or another process answers
        stack.stop()
        raise click.ClickException(str(error)) from None
    except BaseException:
        stack.stop()
        raise
    token_file = data_dir / "api-token"
    draft = data_dir / ".api-token.new"
    draft.write_text(token)
    draft.chmod(0o600)
    draft.replace(token_file)
    try:
        for service in NAMES:
            click.echo(f"{service:<10} {'  '.join(stack.urls(service))}")
        click.echo(f"maildir    {stack.maildir}")
        click.echo(f"logs       {data_dir / 'logs'}")
        click.echo(f"API token  in {token_file} (the client commands read it from there)")
        click.echo(f"console    {stack.urls('protools')[0]}/console (log in with the API token)")
        click.echo("Ctrl-C to stop.")
        stopped = False

        def _stop(*_: object) -> None:
            nonlocal stopped
            stopped = True

        signal.signal(signal.SIGTERM, _stop)
        try:
            while not stopped:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        click.echo("stopping ...")
    finally:
        stack.stop()


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Keep the demo's files here (default: a temporary directory).",
)
def demo(data_dir: Path | None) -> None:
    """Start the stack on SQLite, create a password, show its history and mail, show two errors."""
    from metallica.demo import run_demo

    sys.exit(run_demo(data_dir))
