"""The ``metallica`` command: serve a service, migrate, run the stack, use it, run the demo.

Every service setting is a flag and an environment variable (``METALLICA_*``); flags win.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from metallica.bench.openrunner import OpenConfig
    from metallica.load.schedule import Phase

DEFAULT_DATA_DIR = Path(".metallica")
DEFAULT_URL = "http://127.0.0.1:8000"


def _urls(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


# `password create` and `workflow result` exit with this when the workflow is still running
# (the workflow id and the key go to stderr; stdout stays empty, so a script never takes them for
# a password).
EXIT_RUNNING = 3


def _token_from(data_dir: Path) -> str | None:
    path = data_dir / "api-token"
    return path.read_text().strip() if path.exists() else None


def _token_places(start: Path) -> list[Path]:
    """Where the client commands look for `up`'s token file: ./.metallica/api-token, then the
    same in each parent directory (as git looks for .git)."""
    here = start.resolve()
    return [folder / DEFAULT_DATA_DIR / "api-token" for folder in (here, *here.parents)]


def _find_token() -> str | None:
    for path in _token_places(Path.cwd()):
        if path.is_file():
            return path.read_text().strip() or None
    return None


def _require(name: str, value: Any) -> Any:
    if value in (None, "", ()):
        raise click.UsageError(f"{name} is required (set the variable or pass the flag)")
    return value


def one_line(error: BaseException) -> str:
    """An unexpected error as one line for a person: what failed and why, no traceback."""
    import httpx

    from metallica.errors import MetallicaError

    if isinstance(error, MetallicaError):
        cause = error.__cause__  # a driver's error, translated at the storage edge
        if cause is not None and str(cause).strip():
            return f"{error.detail}: {str(cause).strip().splitlines()[0]}"
        return error.detail
    if isinstance(error, httpx.HTTPError):
        where = ""
        with contextlib.suppress(RuntimeError):  # no request attached
            where = f" {error.request.url.copy_with(query=None)}"
        return f"cannot reach{where}: {error or type(error).__name__}"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}{f': {error.filename}' if error.filename else ''}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class Commands(click.Group):
    """The command group: an error no command expected ends in one line and exit status 1, not
    a traceback (``METALLICA_DEBUG=1`` shows the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if os.environ.get("METALLICA_DEBUG"):
                raise
            raise click.ClickException(one_line(error)) from None


@click.group(
    cls=Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="metallica")
def main() -> None:
    """Metallica: a password-creation workflow that stays correct when the network misbehaves.

    protools orchestrates; the generator makes passwords; the mailer writes mails to a Maildir.
    Start with `metallica demo`, or `metallica up` and then `metallica password create NAME`.
    """


# --- serve ------------------------------------------------------------------------------------

SERVICE_NAMES = click.Choice(["protools", "generator", "mailer"])
# `serve` also runs the benchmark's non-durable floor (see `metallica bench --floor`).
SERVE_NAMES = click.Choice(["protools", "generator", "mailer", "floor"])


# (flag, type, default, help): each is also the variable METALLICA_<FLAG>, e.g.
# --call-timeout and METALLICA_CALL_TIMEOUT. "protools:", "mailer:"... say who reads it.
SERVICE_SETTINGS: list[tuple[str, Any, Any, str]] = [
    ("database-url", str, None, "This service's database: sqlite:///path.db or postgresql://..."),
    (
        "api-token",
        str,
        None,
        "A bearer token: protools accepts it from the client named 'default', the generator and "
        "the mailer accept it from protools, and protools sends it to them unless "
        "METALLICA_SERVICE_TOKEN is set. Named tokens (below) are the production way.",
    ),
    (
        "client-tokens",
        str,
        None,
        "protools: its clients' bearer tokens, 'name:token' entries, comma-separated; several "
        "may be valid at once (rotation). A workflow's results go only to the client that "
        "started it. Prefer the file.",
    ),
    (
        "client-tokens-file",
        click.Path(path_type=Path, dir_okay=False),
        None,
        "protools: a file of 'name:token' lines (# comments), beside METALLICA_CLIENT_TOKENS.",
    ),
    (
        "service-token",
        str,
        None,
        "protools: its own credential towards the generator and the mailer, distinct from "
        "every client's.",
    ),
    (
        "service-tokens",
        str,
        None,
        "generator, mailer: who may call, 'name:token' entries (protools' service token; "
        "several for a rotation).",
    ),
    (
        "service-tokens-file",
        click.Path(path_type=Path, dir_okay=False),
        None,
        "generator, mailer: a file of 'name:token' lines, beside METALLICA_SERVICE_TOKENS.",
    ),
    (
        "generator-urls",
        str,
        None,
        "protools: comma-separated generator base URLs, one per replica.",
    ),
    ("mailer-urls", str, None, "protools: comma-separated mailer base URLs, one per replica."),
    ("maildir", click.Path(path_type=Path), None, "mailer: the Maildir mails are written to."),
    ("mail-domain", str, "example.com", "protools: mails go to <username>@<domain> by default."),
    ("mail-from", str, "Metallica <no-reply@metallica.local>", "mailer: the From header."),
    ("call-timeout", float, 3.0, "protools: seconds to wait for a service's answer."),
    ("connect-timeout", float, 1.0, "protools: seconds to connect to a service."),
    ("retry-initial", float, 0.2, "protools: first retry's backoff ceiling, s (full jitter)."),
    ("retry-max", float, 10.0, "protools: the backoff cap, seconds."),
    ("lease-seconds", float, 15.0, "protools: a dead replica's claimed work is taken over after."),
    (
        "poll-interval",
        float,
        1.0,
        "protools: how often the relay looks for work it was not told of.",
    ),
    ("wait-default", float, 5.0, "protools: seconds a create waits without Prefer: wait."),
    ("wait-max", float, 30.0, "protools: the longest Prefer: wait honoured."),
    ("workflow-deadline", float, 300.0, "protools: seconds before a workflow starts no new step."),
    ("replica-id", str, "", "protools: this replica's name in leases and logs (default: random)."),
    (
        "relay-concurrency",
        click.IntRange(1, 4096),
        128,
        "protools: calls in flight at once; the relay claims no more, the pool holds as many.",
    ),
    (
        "max-in-flight",
        click.IntRange(1, 1_000_000),
        1024,
        "Requests served at once; beyond, 503 overloaded with Retry-After "
        "(health, readiness and metrics are never refused).",
    ),
    (
        "admission-limit",
        click.IntRange(1, 100_000),
        64,
        "protools: most workflows admitted and unfinished at once per replica; the adaptive "
        "limit stays under it; beyond, new commands wait in the admission queue.",
    ),
    (
        "admission-floor",
        click.IntRange(1, 100_000),
        4,
        "protools: the fewest workflows in progress per replica the adaptive limit allows, "
        "whatever the latency; beyond the limit, new commands wait in the admission queue.",
    ),
    (
        "client-rate",
        click.FloatRange(0, 1e9),
        1000.0,
        "protools: commands per second per client (bearer token); beyond, 429. 0: no limit.",
    ),
    ("client-burst", click.FloatRange(1, 1e9), 2000.0, "protools: a client's burst allowance."),
    (
        "backlog-max",
        click.IntRange(1, 100_000_000),
        10_000,
        "protools: outbox messages (workflows parked or in flight) beyond which new commands "
        "get 503; while a service is down, commands are accepted and parked up to this.",
    ),
    (
        "admission-queue-target",
        click.FloatRange(0.001, 60),
        0.1,
        "protools: CoDel's target, seconds: when every command that left the admission queue "
        "for a whole interval had waited longer, and the queue grew meanwhile, it stands and "
        "sheds.",
    ),
    (
        "admission-queue-interval",
        click.FloatRange(0.001, 60),
        0.25,
        "protools: CoDel's interval, seconds: how long the queue must stand before it sheds, "
        "and stay empty before it stops.",
    ),
    (
        "admission-queue-timeout",
        click.FloatRange(0, 300),
        2.0,
        "protools: the longest a new command waits for a place (and never past its Prefer: "
        "wait); then 503 with Retry-After.",
    ),
    (
        "admission-queue-overload-timeout",
        click.FloatRange(0, 60),
        0.025,
        "protools: while the queue stands, the newest command is served first and one waits "
        "at most this, seconds; then 503 with Retry-After.",
    ),
    (
        "admission-queue-max",
        click.IntRange(0, 1_000_000),
        1024,
        "protools: most commands waiting in the admission queue; beyond, 503 at once.",
    ),
    (
        "breaker-failures",
        click.IntRange(1, 10_000),
        5,
        "protools: failures in a row (unreachable, timeout, 5xx) that open a service's circuit.",
    ),
    (
        "breaker-open-seconds",
        click.FloatRange(0.01, 3600),
        1.0,
        "protools: how long a circuit stays open before a probe; doubles while probes fail "
        "(up to 8 s).",
    ),
    (
        "retry-budget-ratio",
        click.FloatRange(0, 10),
        0.2,
        "protools: retries allowed per first attempt, per service; a retry over budget waits.",
    ),
    (
        "retry-budget-floor",
        click.FloatRange(0, 1e6),
        5.0,
        "protools: retries per second always allowed per service.",
    ),
    (
        "downstream-limit",
        click.IntRange(1, 4096),
        128,
        "protools: most calls in flight to one service; the adaptive limit stays under it.",
    ),
    (
        "db-lock-timeout",
        click.FloatRange(0.01, 600),
        2.0,
        "Seconds a statement waits for a lock (keep it under protools' call timeout).",
    ),
    (
        "db-pool-size",
        click.IntRange(1, 1000),
        16,
        "Connections to this service's database (PostgreSQL: mind max_connections).",
    ),
    (
        "db-statement-timeout",
        click.FloatRange(0.01, 3600),
        10.0,
        "PostgreSQL: seconds a statement may run.",
    ),
    (
        "db-idle-timeout",
        click.FloatRange(0.01, 3600),
        30.0,
        "PostgreSQL: seconds a transaction may sit idle before its session is closed.",
    ),
    ("password-length", int, 20, "generator: password length."),
    (
        "password-classes",
        str,
        "letters,digits,symbols",
        "generator: classes, each used once at least.",
    ),
    (
        "log-level",
        click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
        "INFO",
        "Log level; JSON lines on stderr.",
    ),
    (
        "generator-keys",
        str,
        None,
        "generator: its key ring, '<key id>:<base64 of 32+ random bytes>' entries, "
        "comma-separated; the first digests and encrypts, every one verifies and decrypts "
        "(rotation: put the new key first, keep the old). Prefer the variable or the file.",
    ),
    (
        "generator-keys-file",
        click.Path(path_type=Path, dir_okay=False),
        None,
        "generator: a file of key ring entries (one a line or comma-separated; # comments), "
        "instead of METALLICA_GENERATOR_KEYS.",
    ),
    (
        "protools-keys",
        str,
        None,
        "protools: the key ring that encrypts passwords in its events and outbox, "
        "'<key id>:<base64 of 32+ random bytes>' entries, comma-separated; the first encrypts, "
        "every one decrypts (rotation: put the new key first, keep the old). Prefer the "
        "variable or the file.",
    ),
    (
        "protools-keys-file",
        click.Path(path_type=Path, dir_okay=False),
        None,
        "protools: a file of key ring entries (one a line or comma-separated; # comments), "
        "instead of METALLICA_PROTOOLS_KEYS.",
    ),
    (
        "idempotency-retention",
        click.FloatRange(600, 366 * 86400),
        86400.0,
        "generator: seconds a key's answer (the encrypted password) is kept for replays; a "
        "replay after gets 410. Keep it well above protools' workflow deadline.",
    ),
]


def service_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add every service setting to a command, as a flag and an environment variable."""
    function = click.option(
        "--faults/--no-faults",
        envvar="METALLICA_FAULTS",
        default=False,
        show_envvar=True,
        help="Enable the /v1/faults endpoints (tests and the fault lab only).",
    )(function)
    for flag, kind, default, text in reversed(SERVICE_SETTINGS):
        function = click.option(
            f"--{flag}",
            envvar=f"METALLICA_{flag.upper().replace('-', '_')}",
            type=kind,
            default=default,
            show_default=default not in (None, ""),
            show_envvar=True,
            help=text,
        )(function)
    return function


def build_app(service: str, options: dict[str, Any]) -> Any:
    """The ASGI app of ``service`` from the serve options; a missing setting is a usage error."""
    from metallica.storage import UnsupportedDatabaseUrl, check_url

    if service == "floor":
        from metallica.bench.floor import FloorSettings
        from metallica.bench.floor import create_app as create_floor

        return create_floor(
            FloorSettings(
                api_token=_require("METALLICA_API_TOKEN", options["api_token"]),
                service_token=options["service_token"] or "",
                generator_urls=_require(
                    "METALLICA_GENERATOR_URLS", _urls(options["generator_urls"])
                ),
                mailer_urls=_require("METALLICA_MAILER_URLS", _urls(options["mailer_urls"])),
                mail_domain=options["mail_domain"],
                call_timeout=options["call_timeout"],
                connect_timeout=options["connect_timeout"],
                concurrency=options["relay_concurrency"],
            )
        )
    database_url = _require("METALLICA_DATABASE_URL", options["database_url"])
    try:
        check_url(database_url)
    except UnsupportedDatabaseUrl as error:
        raise click.UsageError(error.detail) from None
    token = options["api_token"] or ""
    from metallica.web.auth import Credentials, CredentialsError

    try:
        clients = Credentials.load(
            entries=options["client_tokens"],
            file=options["client_tokens_file"],
            variable="METALLICA_CLIENT_TOKENS",
        )
        callers = Credentials.load(
            entries=options["service_tokens"],
            file=options["service_tokens_file"],
            variable="METALLICA_SERVICE_TOKENS",
        )
    except CredentialsError as error:
        raise click.UsageError(str(error)) from None
    if not token and not (clients if service == "protools" else callers):
        needed = "METALLICA_CLIENT_TOKENS" if service == "protools" else "METALLICA_SERVICE_TOKENS"
        raise click.UsageError(f"{needed} (or METALLICA_API_TOKEN) is required")
    if service == "protools" and not (options["service_token"] or token):
        raise click.UsageError("METALLICA_SERVICE_TOKEN (or METALLICA_API_TOKEN) is required")
    from metallica.storage import Timeouts

    timeouts = Timeouts(
        lock=options["db_lock_timeout"],
        statement=options["db_statement_timeout"],
        idle_in_transaction=options["db_idle_timeout"],
    )
    if service == "protools":
        from metallica import addresses

        try:
            addresses.validate_domain(options["mail_domain"])
        except ValueError as error:
            raise click.UsageError(f"METALLICA_MAIL_DOMAIN: {error}") from None
        from metallica.overload.queue import QueueSettings
        from metallica.protools.flow import FlowSettings
        from metallica.protools.http import create_app
        from metallica.protools.sealing import ProtoolsKeyring
        from metallica.protools.settings import ProtoolsSettings
        from metallica.sealing import KeyConfigError

        try:  # no key, no start; the message names no secret
            keys = ProtoolsKeyring.load(options["protools_keys"], options["protools_keys_file"])
        except KeyConfigError as error:
            raise click.UsageError(str(error)) from None

        return create_app(
            ProtoolsSettings(
                database_url=database_url,
                api_token=token,
                generator_urls=_require(
                    "METALLICA_GENERATOR_URLS", _urls(options["generator_urls"])
                ),
                mailer_urls=_require("METALLICA_MAILER_URLS", _urls(options["mailer_urls"])),
                mail_domain=options["mail_domain"],
                call_timeout=options["call_timeout"],
                connect_timeout=options["connect_timeout"],
                retry_initial=options["retry_initial"],
                retry_max=options["retry_max"],
                lease_seconds=options["lease_seconds"],
                poll_interval=options["poll_interval"],
                wait_default=options["wait_default"],
                wait_max=options["wait_max"],
                workflow_deadline=options["workflow_deadline"],
                replica_id=options["replica_id"],
                faults_enabled=options["faults"],
                relay_concurrency=options["relay_concurrency"],
                database_timeouts=timeouts,
                database_pool_size=options["db_pool_size"],
                max_in_flight=options["max_in_flight"],
                clients=clients,
                service_token=options["service_token"] or "",
                keys=keys,
                flow=FlowSettings(
                    admission_limit=options["admission_limit"],
                    admission_floor=options["admission_floor"],
                    client_rate=options["client_rate"],
                    client_burst=options["client_burst"],
                    backlog_max=options["backlog_max"],
                    queue=QueueSettings(
                        target=options["admission_queue_target"],
                        interval=options["admission_queue_interval"],
                        timeout=options["admission_queue_timeout"],
                        overload_timeout=options["admission_queue_overload_timeout"],
                        max_length=options["admission_queue_max"],
                    ),
                    breaker_failures=options["breaker_failures"],
                    breaker_open_seconds=options["breaker_open_seconds"],
                    retry_budget_ratio=options["retry_budget_ratio"],
                    retry_budget_floor=options["retry_budget_floor"],
                    downstream_limit=options["downstream_limit"],
                ),
            )
        )
    if service == "generator":
        from metallica.password_generator.domain import PasswordPolicy
        from metallica.password_generator.http import create_app as create_generator
        from metallica.password_generator.sealing import KeyConfigError, load_keyring
        from metallica.password_generator.settings import GeneratorSettings

        try:
            policy = PasswordPolicy.parse(options["password_length"], options["password_classes"])
        except ValueError as error:
            raise click.UsageError(f"METALLICA_PASSWORD_*: {error}") from None
        try:  # no key, no start; the message names no secret
            generator_keys = load_keyring(options["generator_keys"], options["generator_keys_file"])
        except KeyConfigError as error:
            raise click.UsageError(str(error)) from None
        return create_generator(
            GeneratorSettings(
                database_url,
                token,
                policy,
                faults_enabled=options["faults"],
                database_timeouts=timeouts,
                database_pool_size=options["db_pool_size"],
                max_in_flight=options["max_in_flight"],
                callers=callers,
                keys=generator_keys,
                retention=options["idempotency_retention"],
            )
        )
    from metallica.mail_sender.http import create_app as create_mailer
    from metallica.mail_sender.settings import MailerSettings

    maildir = _require("METALLICA_MAILDIR", options["maildir"])
    return create_mailer(
        MailerSettings(
            database_url,
            token,
            maildir,
            options["mail_from"],
            faults_enabled=options["faults"],
            database_timeouts=timeouts,
            database_pool_size=options["db_pool_size"],
            max_in_flight=options["max_in_flight"],
            callers=callers,
        )
    )


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


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into a normal exit, so the command's stacks and clusters are cleaned up."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


@main.command()
@click.argument("service", type=SERVE_NAMES)
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
    json_logging.configure(options["log_level"])
    app = build_app(service, options)
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


@main.command()
@click.argument("service", type=SERVICE_NAMES)
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


def _database_urls(database_url: str | None) -> dict[str, str]:
    """Per-service URLs: one PostgreSQL database, a schema per service; or SQLite files."""
    if not database_url:
        return {}
    if database_url.startswith("sqlite"):
        raise click.UsageError("--database-url takes a PostgreSQL URL; SQLite is the default")
    from metallica.storage import check_url
    from metallica.storage.postgres import ensure_schema, schema_url

    check_url(database_url)
    for service in ("protools", "generator", "mailer"):
        try:
            ensure_schema(database_url, service)
        except Exception as error:
            raise click.ClickException(f"cannot prepare the database: {one_line(error)}") from None
    return {
        service: schema_url(database_url, service)
        for service in ("protools", "generator", "mailer")
    }


@main.command()
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
        os.environ.get("METALLICA_API_TOKEN") or _token_from(data_dir) or secrets.token_urlsafe(24)
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
        for service in ("protools", "generator", "mailer"):
            click.echo(f"{service:<10} {'  '.join(stack.urls(service))}")
        click.echo(f"maildir    {stack.maildir}")
        click.echo(f"logs       {data_dir / 'logs'}")
        click.echo(f"API token  in {token_file} (the client commands read it from there)")
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


# --- clients ----------------------------------------------------------------------------------


def client_options(function: Callable[..., Any]) -> Callable[..., Any]:
    @click.option(
        "--url",
        envvar="METALLICA_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="protools' base URL. [METALLICA_URL]",
    )
    @click.option(
        "--token",
        envvar="METALLICA_API_TOKEN",
        help="API token [METALLICA_API_TOKEN]; default: the .metallica/api-token that `up` "
        "wrote, in this directory or the nearest parent that has one.",
    )
    @functools.wraps(function)
    def wrapper(url: str, token: str | None, **kwargs: Any) -> Any:
        from metallica.client import ProtoolsClient

        resolved = token or _find_token()
        if not resolved:
            places = _token_places(Path.cwd())
            shown = ", ".join(str(path) for path in places[:3]) + (
                f" (and {len(places) - 3} more up to /)" if len(places) > 3 else ""
            )
            raise click.UsageError(
                f"no API token: pass --token, set METALLICA_API_TOKEN, or run `metallica up` "
                f"(it writes .metallica/api-token); looked in {shown}"
            )
        with ProtoolsClient(url, resolved) as client:
            try:
                return function(client, **kwargs)
            except Exception as error:
                import httpx

                if isinstance(error, httpx.HTTPError):
                    raise click.ClickException(
                        f"cannot reach protools at {url}: {error or type(error).__name__}"
                    ) from None
                raise

    return wrapper


def _fail_with_problem(response: Any) -> None:
    """End the command with the service's problem, one line (and the workflow it concerns)."""
    try:
        problem = response.json()
        message = f"{problem.get('detail') or problem.get('title')} ({problem.get('type')})"
        if problem.get("workflow_id"):
            message += f"; workflow {problem['workflow_id']}"
    except (ValueError, AttributeError):
        message = " ".join(response.text[:200].split()) or response.reason_phrase
    raise click.ClickException(f"HTTP {response.status_code}: {message}")


WAIT = click.FloatRange(0, 30)


def _still_running(workflow_id: str, key: str | None) -> None:
    """Say on stderr that the workflow is still running, how to get its result, and exit
    :data:`EXIT_RUNNING`."""
    click.echo(f"still running: workflow {workflow_id}", err=True)
    click.echo(
        f"  get the password when it is done: metallica workflow result {workflow_id}", err=True
    )
    if key is not None:
        click.echo(f"  or run this command again with --key {key}", err=True)
    sys.exit(EXIT_RUNNING)


@main.group()
def password() -> None:
    """Create passwords through protools."""


@password.command("create")
@click.argument("username")
@click.option("--email", help="Where the mail goes (default: <username>@<mail domain>).")
@click.option(
    "--key",
    help="Idempotency-Key (default: a new one, printed on stderr). Run the command again with "
    "the same key to resume it: it never creates a second password.",
)
@click.option(
    "--wait", type=WAIT, default=5.0, show_default=True, help="Seconds to wait for the result."
)
@client_options
def password_create(
    client: Any, username: str, email: str | None, key: str | None, wait: float
) -> None:
    """Create a password for USERNAME and print it on stdout (nothing else goes there).

    The workflow id and the Idempotency-Key go to stderr. Exit status: 0 with the password;
    3 when the workflow is still running after --wait (get it with `metallica workflow result
    ID`, or run the same command again with --key); 1 when it failed or was refused.
    """
    import uuid

    key = key or str(uuid.uuid4())
    response = client.create_password(username, email=email, key=key, wait=wait)
    if response.status_code == 200:
        click.echo(response.json()["password"])
        click.echo(f"workflow {response.json()['workflow_id']} (key {key})", err=True)
    elif response.status_code == 202:
        _still_running(response.json()["workflow_id"], key)
    else:
        _fail_with_problem(response)


@main.group()
def workflow() -> None:
    """Inspect workflows."""


@workflow.command("result")
@click.argument("workflow_id")
@click.option(
    "--wait", type=WAIT, default=30.0, show_default=True, help="Seconds to wait for the end."
)
@client_options
def workflow_result(client: Any, workflow_id: str, wait: float) -> None:
    """Wait for a workflow and print its password on stdout.

    Exit status: 0 with the password; 3 when still running after --wait; 1 when it failed
    (the reason on stderr) or cannot be read.
    """
    response = client.workflow(workflow_id, wait=wait)
    if response.status_code != 200:
        _fail_with_problem(response)
    body = response.json()
    if body["status"] == "completed":
        click.echo(body["password"])
    elif body["status"] == "failed":
        error = body.get("error") or {}
        raise click.ClickException(
            f"workflow {workflow_id} failed: {error.get('detail') or error.get('title')}"
            f" ({error.get('type')})"
        )
    else:
        _still_running(workflow_id, None)


@workflow.command("list")
@click.option("--status", type=click.Choice(["running", "completed", "failed"]), help="Only these.")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--after", help="The cursor a previous page printed, for the next page.")
@client_options
def workflow_list(client: Any, status: str | None, limit: int, after: str | None) -> None:
    """Your workflows (this token's client), newest first, a page at a time."""
    from metallica.client import format_table

    response = client.list_workflows(status=status, limit=limit, after=after)
    if response.status_code != 200:
        _fail_with_problem(response)
    page = response.json()
    rows = [
        [w["workflow_id"], w["status"], w["started_at"], w["username"] or ""]
        for w in page["workflows"]
    ]
    if rows:
        click.echo(format_table(["workflow", "status", "started", "username"], rows))
    else:
        click.echo("no workflows", err=True)
    if page["next"]:
        click.echo(f"more: metallica workflow list --after {page['next']}", err=True)


@workflow.command("show")
@click.argument("workflow_id")
@click.option(
    "--all",
    "every_event",
    is_flag=True,
    help="List every event; by default a run of failed attempts of a step is one line, with "
    "its count and causes.",
)
@client_options
def workflow_show(client: Any, workflow_id: str, every_event: bool) -> None:
    """Status and event history of a workflow, as a table."""
    from metallica.client import history_table

    state = client.workflow(workflow_id)
    if state.status_code != 200:
        _fail_with_problem(state)
    events = client.events(workflow_id, view="all" if every_event else "compact")
    if events.status_code != 200:
        _fail_with_problem(events)
    click.echo(f"workflow {workflow_id}: {state.json()['status']}")
    click.echo(history_table(events.json()["events"]))


# --- the fault lab ----------------------------------------------------------------------------


@main.group()
def scenarios() -> None:
    """The brief's network failures, reproduced against a stack this command starts."""


@scenarios.command("list")
def scenarios_list() -> None:
    """Every scenario: its name and the fault it injects."""
    from metallica.client import format_table
    from metallica.lab.scenarios import SCENARIOS

    rows = [[s.name, s.group, s.title, s.fault] for s in SCENARIOS.values()]
    click.echo(format_table(["name", "group", "scenario", "fault"], rows))


@scenarios.command("run")
@click.argument("names", nargs=-1)
@click.option("--replicas", type=click.IntRange(1, 5), default=1, show_default=True)
@click.option(
    "--database-url",
    envvar="METALLICA_DATABASE_URL",
    help="A PostgreSQL database to run on (fresh schemas per run); default: SQLite files.",
)
@click.option(
    "--postgres",
    is_flag=True,
    help="Start a throwaway PostgreSQL cluster (local binaries) to run on; lets scenario "
    "crash-and-db-restart restart it.",
)
@click.option("--down-seconds", type=float, default=30.0, show_default=True)
@click.option("--wire-seconds", type=float, default=10.0, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Keep the lab's files here.")
@click.option(
    "--overload",
    is_flag=True,
    help="Run the overload scenarios (default with no NAMES: the fault scenarios). They first "
    "measure the lab's capacity C; use them with --postgres --replicas 2.",
)
def scenarios_run(
    names: tuple[str, ...],
    replicas: int,
    database_url: str | None,
    postgres: bool,
    down_seconds: float,
    wire_seconds: float,
    data_dir: Path | None,
    overload: bool,
) -> None:
    """Run the scenarios NAMES (default: every fault scenario, or with --overload every
    overload scenario); exit 1 on any violation."""
    import contextlib
    import logging
    import uuid

    from metallica.lab.harness import LabConfig
    from metallica.lab.runner import render, run_scenarios
    from metallica.lab.scenarios import FAULT_SCENARIOS, OVERLOAD_SCENARIOS, SCENARIOS
    from metallica.load.pg_cluster import ThrowawayCluster

    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise click.UsageError(f"unknown scenarios {unknown}; see `metallica scenarios list`")
    if database_url and postgres:
        raise click.UsageError("--database-url and --postgres exclude each other")
    logging.getLogger("metallica.faultproxy").setLevel(logging.ERROR)
    _exit_on_sigterm()
    started = time.monotonic()

    def progress(line: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f}s] {line}", err=True)

    with contextlib.ExitStack() as stack:
        cluster = None
        if postgres:
            progress("starting a throwaway PostgreSQL cluster")
            cluster = stack.enter_context(contextlib.closing(_Cluster(ThrowawayCluster())))
            database_url = cluster.url
        urls: dict[str, str] = {}
        if database_url:
            from metallica.storage.postgres import drop_schema, ensure_schema, schema_url

            run = f"lab_{uuid.uuid4().hex[:8]}"
            for service in ("protools", "generator", "mailer"):
                ensure_schema(database_url, f"{run}_{service}")
                stack.callback(drop_schema, database_url, f"{run}_{service}")
                urls[service] = schema_url(database_url, f"{run}_{service}")
        config = LabConfig(
            replicas=replicas,
            data_dir=data_dir,
            database_urls=urls,
            cluster=cluster.cluster if cluster else None,
            down_seconds=down_seconds,
            wire_fault_seconds=wire_seconds,
        )
        default = OVERLOAD_SCENARIOS if overload else FAULT_SCENARIOS
        results = run_scenarios(list(names or default), config, progress)
    click.echo(render(results))
    bad = [result.name for result in results if not result.ok]
    click.echo(f"\n{len(results) - len(bad)}/{len(results)} scenarios held every invariant.")
    if bad:
        raise SystemExit(1)


class _Cluster:
    """A started throwaway cluster that ``contextlib.closing`` stops."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        cluster.start()
        self.url: str = cluster.url

    def close(self) -> None:
        self.cluster.stop()


@main.group()
def proxy() -> None:
    """A TCP fault proxy (latency, down, timeout, reset_peer, limit_data, slicer, bandwidth)."""


@proxy.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Control API interface.")
@click.option("--port", type=int, default=8474, show_default=True, help="Control API port.")
@click.option(
    "--proxy",
    "proxies",
    multiple=True,
    metavar="NAME=LISTEN=UPSTREAM",
    help="A proxy to create at start, e.g. generator=127.0.0.1:9100=127.0.0.1:8100.",
)
def proxy_serve(host: str, port: int, proxies: tuple[str, ...]) -> None:
    """Run the proxy with its HTTP control API (Toxiproxy-like) until Ctrl-C."""
    from metallica.faultproxy import serve as serve_proxies

    parsed = []
    for entry in proxies:
        parts = entry.split("=")
        if len(parts) != 3:
            raise click.UsageError(f"--proxy {entry!r}: expected NAME=LISTEN=UPSTREAM")
        parsed.append((parts[0], parts[1], parts[2]))
    serve_proxies(host, port, parsed, log_level="warning")


@proxy.command("toxic")
@click.argument("proxy_name")
@click.argument(
    "kind",
    type=click.Choice(
        ["latency", "down", "timeout", "reset_peer", "limit_data", "slicer", "bandwidth", "clear"]
    ),
)
@click.option("--attr", "attributes", multiple=True, metavar="KEY=INT", help="e.g. latency_ms=2000")
@click.option("--direction", type=click.Choice(["upstream", "downstream", "both"]))
@click.option("--remove", is_flag=True, help="Remove the toxic of that type instead.")
@click.option(
    "--control", default="http://127.0.0.1:8474", show_default=True, help="Control API URL."
)
def proxy_toxic(
    proxy_name: str,
    kind: str,
    attributes: tuple[str, ...],
    direction: str | None,
    remove: bool,
    control: str,
) -> None:
    """Add (or --remove) a toxic on PROXY_NAME; KIND `clear` removes them all."""
    from metallica.faultproxy import ProxyControlClient, ProxyControlError, parse_toxic

    client = ProxyControlClient(control)
    try:
        if kind == "clear":
            client.clear(proxy_name)
        elif remove:
            client.remove_toxic(proxy_name, kind)
        else:
            values: dict[str, Any] = {}
            for item in attributes:
                key, _, value = item.partition("=")
                if not value.lstrip("-").isdigit():
                    raise click.UsageError(f"--attr {item!r}: expected KEY=INTEGER")
                values[key] = int(value)
            body: dict[str, Any] = {"type": kind, "attributes": values}
            if direction:
                body["direction"] = direction
            client.add_toxic(proxy_name, parse_toxic(body))
    except ProxyControlError as error:
        raise click.ClickException(str(error)) from None
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    for toxic in client.toxics(proxy_name):
        click.echo(f"{proxy_name}: {toxic.kind} {toxic.name} {toxic.direction} {toxic.attributes}")


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Keep the demo's files here (default: a temporary directory).",
)
def demo(data_dir: Path | None) -> None:
    """Start the stack on SQLite, create a password, show its history and mail, show two errors."""
    from metallica.demo import run_demo

    sys.exit(run_demo(data_dir))


if __name__ == "__main__":
    main()


# --- bench ------------------------------------------------------------------------------------


def _concurrencies(value: str) -> list[int]:
    try:
        found = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter("a comma-separated list of integers, e.g. 1,4,16,64") from None
    if not found or any(c < 1 or c > 4096 for c in found):
        raise click.BadParameter("each concurrency is 1 to 4096")
    return found


# Options of one mode only: given to another, they would be silently ignored.
_CLOSED_LOOP_ONLY = ("concurrency", "count", "floor", "preload")
_OPEN_LOOP_ONLY = ("rate", "ramp", "duration", "phases")
_OPEN_OR_CAPACITY = ("goodput_deadline", "wait_seconds", "seed")
_CAPACITY_ONLY = ("p99_bound_ms", "step_seconds", "start_rate", "max_rate", "bisections")


def _bench_options_fit(context: click.Context, *, open_loop: bool, capacity: bool) -> None:
    """A usage error for an option the chosen mode would ignore."""
    from click.core import ParameterSource

    flags = {param.name: param.opts[-1] for param in context.command.params}

    def given(names: tuple[str, ...]) -> list[str]:
        return [
            flags[name]
            for name in names
            if context.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
        ]

    if open_loop and capacity:
        raise click.UsageError(
            "--capacity runs its own open loops: drop --open-loop, --rate, --ramp and --phases"
        )
    wrong = [
        *(given(_CLOSED_LOOP_ONLY) if open_loop or capacity else []),
        *(given(_OPEN_LOOP_ONLY) if not open_loop else []),
        *(given(_OPEN_OR_CAPACITY) if not (open_loop or capacity) else []),
        *(given(_CAPACITY_ONLY) if not capacity else []),
    ]
    mode = "--capacity" if capacity else "--open-loop" if open_loop else "the closed loop"
    if wrong:
        raise click.UsageError(f"{', '.join(wrong)}: not an option of {mode}")
    if given(("phases",)) and given(("duration",)):
        raise click.UsageError("--phases carry their own durations: drop --duration")


def _open_phases(
    rate: float | None, ramp: str | None, duration: float, phases: str | None
) -> list[Phase]:
    """The open loop's schedule from exactly one of --rate, --ramp and --phases."""
    from metallica.load.schedule import Phase, parse_phases, parse_ramp, validate

    if sum(option is not None for option in (rate, ramp, phases)) != 1:
        raise click.UsageError("an open loop takes one of --rate, --ramp and --phases")
    hint = "--phases" if phases is not None else "--ramp" if ramp is not None else "--rate"
    try:
        if phases is not None:
            return parse_phases(phases)
        if ramp is not None:
            return [parse_ramp(ramp, duration)]
        assert rate is not None
        found = [Phase.constant(rate, duration)]
        validate(found)
        return found
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=hint) from None


def _bench_output() -> tuple[Callable[[str], None], Callable[[str], None]]:
    """``say`` (a line on stderr, with the time since the start) and ``progress_line`` (the live
    line, redrawn in place on a terminal, every 5 s in a log)."""
    started = time.monotonic()
    live = sys.stderr.isatty()

    def say(line: str) -> None:
        click.echo(
            f"\r\033[K[{time.monotonic() - started:6.1f}s] {line}"
            if live
            else f"[{time.monotonic() - started:6.1f}s] {line}",
            err=True,
        )

    last_drawn = [0.0]

    def progress_line(line: str) -> None:
        now = time.monotonic()
        if live:
            click.echo(f"\r\033[K{line}", err=True, nl=False)
        elif line and now - last_drawn[0] >= 5:  # a log, not a terminal: a line every 5 s
            last_drawn[0] = now
            click.echo(f"[{now - started:6.1f}s] {line}", err=True)

    return say, progress_line


def _bench_open(
    config: OpenConfig,
    say: Callable[[str], None],
    progress_line: Callable[[str], None],
    json_path: Path | None,
    plot_path: Path | None,
) -> None:
    """Run an open loop or a capacity search; print its report; exit 1 if an invariant broke."""
    from metallica.bench.openrunner import capacity_table, run_open, summary_lines
    from metallica.bench.runner import BenchError

    try:
        report = run_open(config, say, progress_line)
    except BenchError as error:
        raise click.ClickException(str(error)) from None
    if report.summary is not None:
        for line in summary_lines(report.summary):
            click.echo(line)
        if report.unsettled:
            click.echo(f"commands whose outcome stayed unknown: {report.unsettled}")
    if report.capacity is not None:
        click.echo(capacity_table(report.capacity))
    if json_path is not None:
        json_path.write_text(report.to_json())
        click.echo(f"results: {json_path}")
    if plot_path is not None:
        from metallica.load.plot import plot_capacity, plot_timeline

        try:
            if report.capacity is not None:
                plot_capacity(report.capacity, plot_path)
            else:
                plot_timeline(report.timeline, plot_path)
        except RuntimeError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"plot: {plot_path}")
    if report.checker is not None:
        verdict = "held" if report.checker["ok"] else "VIOLATED"
        click.echo(f"invariants over {report.checker['workflows']} workflows: {verdict}")
        for violation in report.checker["violations"][:10]:
            click.echo(f"  {violation}")
    if report.capacity is not None:
        click.echo(f"capacity: {report.capacity['capacity']:g} wf/s")
    if report.checker is not None and not report.checker["ok"]:
        sys.exit(1)


@main.command()
@click.option(
    "-c",
    "--concurrency",
    "concurrency",
    default="1,4,16,64",
    show_default=True,
    help="Closed-loop concurrencies to run, comma-separated.",
)
@click.option(
    "-n",
    "--count",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Workflows measured per concurrency.",
)
@click.option(
    "--warmup",
    type=click.IntRange(0),
    default=100,
    show_default=True,
    help="Workflows sent (not measured) before each round, or before an open loop or a "
    "capacity search.",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Replicas of each service in the stack the bench starts.",
)
@click.option("--postgres", is_flag=True, help="Run on a throwaway PostgreSQL cluster.")
@click.option("--database-url", help="Run on this PostgreSQL server (fresh schemas per run).")
@click.option(
    "--url",
    "urls",
    multiple=True,
    help="Measure a running protools instead (repeat for replicas); no floor, no check.",
)
@click.option("--token", envvar="METALLICA_API_TOKEN", help="The API token, with --url.")
@click.option(
    "--floor",
    is_flag=True,
    help="Also run each round through a non-durable orchestrator on the same HTTP "
    "stack and services, and give each durable figure as a ratio to it.",
)
@click.option(
    "--preload",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="After the rounds, store this many completed workflows (bulk path), then run "
    "the rounds again: throughput and latency with history.",
)
@click.option("--no-check", is_flag=True, help="Skip the invariant checker afterwards.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write results here.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    help="Draw throughput and p99 against concurrency into this PNG (matplotlib).",
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Keep the stack's files here.")
@click.option(
    "--open-loop",
    is_flag=True,
    help="Send commands at Poisson arrival times, whether or not earlier ones were answered "
    "(implied by --rate, --ramp and --phases).",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, 5000, min_open=True),
    help="Open loop: arrivals per second, for --duration.",
)
@click.option(
    "--ramp", metavar="FROM:TO", help="Open loop: a rate rising linearly over --duration."
)
@click.option(
    "--duration",
    type=click.FloatRange(0, 3600, min_open=True),
    default=30.0,
    show_default=True,
    help="Open loop: seconds of --rate or --ramp.",
)
@click.option(
    "--phases",
    metavar="RATExSECONDS,...",
    help="Open loop: phases run one after the other, e.g. 400x30,100x20 (FROM:TOxSECONDS ramps).",
)
@click.option(
    "--goodput-deadline",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="Open loop: a command completed later than this (seconds) is not goodput.",
)
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(0.5, 30),
    default=10.0,
    show_default=True,
    help="Open loop: each command asks protools to wait this long for the result (Prefer: wait).",
)
@click.option("--seed", type=int, help="Open loop: seed the arrival times (a replayable run).")
@click.option(
    "--capacity",
    is_flag=True,
    help="Find the highest arrival rate whose admitted p99 stays within --p99-bound-ms with "
    "under 1 %% shed, with short open-loop probes.",
)
@click.option(
    "--p99-bound-ms",
    type=click.FloatRange(1, 60_000),
    default=100.0,
    show_default=True,
    help="Capacity: the admitted p99 a sustainable rate keeps.",
)
@click.option(
    "--step-seconds",
    type=click.FloatRange(0.5, 60),
    default=5.0,
    show_default=True,
    help="Capacity: seconds per probe.",
)
@click.option(
    "--start-rate",
    type=click.FloatRange(1, 5000),
    default=25.0,
    show_default=True,
    help="Capacity: the first probe's rate (doubled until a probe fails, then bisected).",
)
@click.option(
    "--max-rate",
    type=click.FloatRange(1, 5000),
    default=2000.0,
    show_default=True,
    help="Capacity: never probe above this rate.",
)
@click.option(
    "--bisections",
    type=click.IntRange(0, 8),
    default=3,
    show_default=True,
    help="Capacity: probes between the last rate that passed and the first that failed.",
)
@click.pass_context
def bench(
    context: click.Context,
    concurrency: str,
    count: int,
    warmup: int,
    replicas: int,
    postgres: bool,
    database_url: str | None,
    urls: tuple[str, ...],
    token: str | None,
    floor: bool,
    preload: int,
    no_check: bool,
    json_path: Path | None,
    plot_path: Path | None,
    data_dir: Path | None,
    open_loop: bool,
    rate: float | None,
    ramp: str | None,
    duration: float,
    phases: str | None,
    goodput_deadline: float,
    wait_seconds: float,
    seed: int | None,
    capacity: bool,
    p99_bound_ms: float,
    step_seconds: float,
    start_rate: float,
    max_rate: float,
    bisections: int,
) -> None:
    """Measure workflows/s and latency in closed loops, then check the invariants.

    Starts its own stack (SQLite by default) unless given --url; prints a live progress line,
    one line per round, then a table with CPU ms per workflow of every process measured.

    With --open-loop (--rate, --ramp or --phases), commands arrive on a Poisson schedule instead
    and the report gives throughput, goodput, admitted and shed latencies and a timeline. With
    --capacity, short open-loop probes find the highest rate served within --p99-bound-ms.
    """
    from metallica.bench.runner import BenchConfig, run, table

    if sum(map(bool, (postgres, database_url, urls))) > 1:
        raise click.UsageError("--postgres, --database-url and --url exclude each other")
    if urls and not token:
        raise click.UsageError("--url needs the API token (--token or METALLICA_API_TOKEN)")
    if urls and (floor or preload):
        raise click.UsageError("--floor and --preload need a stack the bench starts (drop --url)")
    open_loop = open_loop or any(option is not None for option in (rate, ramp, phases))
    _bench_options_fit(context, open_loop=open_loop, capacity=capacity)
    _exit_on_sigterm()
    config = BenchConfig(
        concurrencies=_concurrencies(concurrency),
        count=count,
        warmup=warmup,
        replicas=replicas,
        postgres=postgres,
        database_url=database_url,
        urls=urls,
        token=token,
        floor=floor,
        preload=preload,
        check=not no_check and not urls,
        data_dir=data_dir,
    )
    say, progress_line = _bench_output()
    if open_loop or capacity:
        from metallica.bench.openrunner import OpenConfig

        if urls:
            from metallica.load.openloop import require_loopback

            try:
                require_loopback(urls)
            except ValueError as error:
                raise click.UsageError(str(error)) from None
        _bench_open(
            OpenConfig(
                config,
                phases=[] if capacity else _open_phases(rate, ramp, duration, phases),
                capacity=capacity,
                warmup=warmup,
                goodput_deadline=goodput_deadline,
                wait_seconds=wait_seconds,
                seed=seed,
                p99_bound=p99_bound_ms / 1000,
                step_seconds=step_seconds,
                start_rate=min(start_rate, max_rate),
                max_rate=max_rate,
                bisections=bisections,
            ),
            say,
            progress_line,
            json_path,
            plot_path,
        )
        return

    from metallica.bench.runner import BenchError

    try:
        report = run(config, say, progress_line)
    except BenchError as error:
        raise click.ClickException(str(error)) from None
    click.echo(table(report))
    for name, (before, after) in sorted(report.memory_mb.items()):
        click.echo(f"rss {name}: {before:.1f} MB at the start, {after:.1f} MB at the end")
    if json_path is not None:
        json_path.write_text(report.to_json())
        click.echo(f"results: {json_path}")
    if plot_path is not None:
        from metallica.bench.plot import plot

        try:
            plot(report, plot_path)
        except RuntimeError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"plot: {plot_path}")
    if report.checker is not None:
        verdict = "held" if report.checker["ok"] else "VIOLATED"
        click.echo(f"invariants over {report.checker['workflows']} workflows: {verdict}")
        for violation in report.checker["violations"][:10]:
            click.echo(f"  {violation}")
        if not report.checker["ok"]:
            sys.exit(1)
