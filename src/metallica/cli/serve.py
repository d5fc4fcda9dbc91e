"""`metallica serve` (one service process) and `metallica migrate`."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from metallica.cli.options import service_options
from metallica.config import FLOOR, ConfigError
from metallica.services import NAMES, build_app


def _floor(options: dict[str, Any]) -> Any:
    """The bench's non-durable orchestrator (``metallica bench --floor``), served like the
    services but not one of them."""
    from metallica.bench.floor import FloorSettings, create_app

    return create_app(FloorSettings.from_options(options))


def _die_with_parent(parent: str | None) -> None:
    """When a stack started this process (``METALLICA_PARENT_PID``), end it with that stack:
    a stack killed without its cleanup (SIGKILL, a crash) leaves no orphan service behind.
    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere it does nothing."""
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if str(os.getppid()) != parent:  # the stack died before the prctl took effect
        sys.exit(0)


@click.command()
@click.argument("service", type=click.Choice([*NAMES, FLOOR]))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--fd",
    type=click.IntRange(min=0),
    default=None,
    help="Serve on this inherited, already bound and listening socket instead of --host/--port "
    "(how `metallica up` and the test stacks start services, so no port is ever raced for).",
)
@service_options
def serve(service: str, host: str, port: int, fd: int | None, **options: Any) -> None:
    """Run one service process (protools, generator or mailer) until stopped.

    `floor` is the benchmark's non-durable orchestrator (see `metallica bench --floor`).
    """
    import uvicorn

    from metallica.web import logging as json_logging

    _die_with_parent(os.environ.get("METALLICA_PARENT_PID"))
    json_logging.configure(options["log_level"].upper())
    try:
        app = _floor(options) if service == FLOOR else build_app(service, options)
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=5
    )
    sockets = None
    if fd is not None:
        from metallica.listeners import PortUnavailable, inherited_socket

        try:
            sockets = [inherited_socket(fd)]
        except (OSError, PortUnavailable) as error:
            raise click.UsageError(f"--fd {fd}: not an inherited socket ({error})") from None
    server = uvicorn.Server(config)
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(3)  # as uvicorn.run does: the app's startup failed


@click.command()
@click.argument("service", type=click.Choice(NAMES))
@click.option(
    "--database-url",
    envvar="METALLICA_DATABASE_URL",
    required=True,
    help="[METALLICA_DATABASE_URL]",
)
def migrate(service: str, database_url: str) -> None:
    """Apply the pending migrations of SERVICE's database (safe while replicas run)."""
    import logging

    # The pool logs each failed connection on its own; the command says it once, in one line.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    from metallica.storage import open_database
    from metallica.storage.migrate import migrate as apply

    database = open_database(database_url, service, pool_size=1)
    try:
        applied = apply(database)
    finally:
        database.close()
    click.echo(f"{service}: applied {applied}" if applied else f"{service}: up to date")


# --- the stack --------------------------------------------------------------------------------
