"""Every setting of the services, declared once: its name, type, bounds, default, help, and
which services read it.

This table is the only place a default lives. The services' Settings dataclasses take their
defaults from it (:func:`default`), ``metallica serve`` makes a flag and a ``METALLICA_*``
variable of each entry (:mod:`metallica.cli.options`), each service's ``settings.py`` builds
and checks its Settings from the values (raising :class:`ConfigError`, one line for the CLI),
and the README's configuration table is printed from it (``python -m metallica.config``; a
test fails when the two drift).

Pure data: no framework, no I/O.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTOOLS, GENERATOR, MAILER, FLOOR = "protools", "generator", "mailer", "floor"
# The three services, in the order they are listed; protools' callees, in the order started.
SERVICE_NAMES: tuple[str, ...] = (PROTOOLS, GENERATOR, MAILER)
CALLEE_NAMES: tuple[str, ...] = (GENERATOR, MAILER)
EVERY_SERVICE = frozenset(SERVICE_NAMES)
CALLEES = frozenset(CALLEE_NAMES)


class ConfigError(ValueError):
    """A setting is missing or wrong: one line, naming the variable, never a secret."""


@dataclass(frozen=True)
class Setting:
    """One setting: ``--<name>`` on ``metallica serve``, ``METALLICA_<NAME>`` in the
    environment. ``kind`` is str, int, float, bool or Path; ``minimum``/``maximum`` bound a
    number; ``choices`` a string; ``unit`` is how the README writes the default ("s", "/s").
    ``readers``: the services that read it (the floor is the bench's, never documented)."""

    name: str
    kind: type
    default: Any
    help: str
    readers: frozenset[str]
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    required: str = ""  # when required, how the README says so

    @property
    def variable(self) -> str:
        return "METALLICA_" + self.name.upper().replace("-", "_")

    @property
    def key(self) -> str:
        """The Python name of its value (``call-timeout``: ``call_timeout``)."""
        return self.name.replace("-", "_")


def _s(
    name: str,
    kind: type,
    default: Any,
    readers: Iterable[str],
    help: str,
    **more: Any,
) -> Setting:
    return Setting(name, kind, default, " ".join(help.split()), frozenset(readers), **more)


P, ALL = (PROTOOLS,), EVERY_SERVICE
KEY_RING = "`<key id>:<base64 of 32+ random bytes>` entries, comma-separated"

SETTINGS: tuple[Setting, ...] = (
    _s(
        "database-url",
        str,
        None,
        ALL,
        """This service's own database: sqlite:///relative.db, sqlite:////abs/path.db or
        postgresql://...""",
        required="(required)",
    ),
    _s(
        "api-token",
        str,
        None,
        (*ALL, FLOOR),
        """One plain bearer token for simple setups: the client named 'default' at protools,
        accepted by the generator and the mailer, and sent by protools when
        METALLICA_SERVICE_TOKEN is unset. Named tokens (below) are the production way.""",
    ),
    _s(
        "client-tokens",
        str,
        None,
        P,
        """Its clients' bearer tokens, 'name:token' entries, comma-separated; several may be
        valid at once, under one name or several (rotate by adding the new token, moving
        clients over, removing the old). A workflow's results, events and replays are for the
        client that started it only (403 for any other). Prefer the file.""",
        required="(this, the file or the API token)",
    ),
    _s(
        "client-tokens-file",
        Path,
        None,
        P,
        "A file of 'name:token' lines (# comments), beside METALLICA_CLIENT_TOKENS.",
    ),
    _s(
        "service-token",
        str,
        None,
        (PROTOOLS, FLOOR),
        """protools' own credential towards the generator and the mailer, held by no
        client.""",
        required="(this or the API token)",
    ),
    _s(
        "service-tokens",
        str,
        None,
        CALLEES,
        """Who may call, 'name:token' entries: `protools:<its service token>` (two during a
        rotation).""",
        required="(this, the file or the API token)",
    ),
    _s(
        "service-tokens-file",
        Path,
        None,
        CALLEES,
        "A file of 'name:token' lines (# comments), beside METALLICA_SERVICE_TOKENS.",
    ),
    _s(
        "generator-urls",
        str,
        None,
        (PROTOOLS, FLOOR),
        """Comma-separated generator base URLs; calls rotate over the replicas and fail over.
        Each URL is a replica, and an http URL whose host is a DNS name (not an IP or
        localhost) is one replica per address it resolves to (looked up again every 5 s:
        Compose's service names).""",
        required="(required)",
    ),
    _s(
        "mailer-urls",
        str,
        None,
        (PROTOOLS, FLOOR),
        "Comma-separated mailer base URLs, as METALLICA_GENERATOR_URLS.",
        required="(required)",
    ),
    _s(
        "maildir",
        Path,
        None,
        (MAILER,),
        "The Maildir mails are written to (replicas may share it).",
        required="(required)",
    ),
    _s(
        "mail-domain",
        str,
        "example.com",
        (PROTOOLS, FLOOR),
        "Mails go to `<username>@<domain>` when no email is given; checked at start.",
    ),
    _s(
        "mail-from",
        str,
        "Metallica <no-reply@metallica.local>",
        (MAILER,),
        "The From header.",
    ),
    _s(
        "call-timeout",
        float,
        3.0,
        (PROTOOLS, FLOOR),
        "Seconds to wait for a service's answer, per call.",
        minimum=0,
        unit="s",
    ),
    _s(
        "connect-timeout",
        float,
        1.0,
        (PROTOOLS, FLOOR),
        "Seconds to connect to a service, per call.",
        minimum=0,
        unit="s",
    ),
    _s(
        "retry-initial",
        float,
        0.2,
        P,
        """The first retry's backoff ceiling, seconds: capped exponential backoff with full
        jitter.""",
        minimum=0,
        unit="s",
    ),
    _s("retry-max", float, 10.0, P, "The backoff's cap, seconds.", minimum=0, unit="s"),
    _s(
        "lease-seconds",
        float,
        15.0,
        P,
        "A dead replica's claimed work is taken over after this many seconds.",
        minimum=0,
        unit="s",
    ),
    _s(
        "commit-batch",
        int,
        64,
        P,
        """The most accepts and attempt outcomes one commit carries (group commit: those that
        arrive while the previous commit is under way share the next one). 1 turns it off:
        each use case commits alone.""",
        minimum=1,
        maximum=1000,
    ),
    _s(
        "poll-interval",
        float,
        1.0,
        P,
        "How often, in seconds, the relay looks for work it was not told about.",
        minimum=0,
        unit="s",
    ),
    _s(
        "log-readers",
        str,
        None,
        P,
        """Names of the clients (comma-separated, as in METALLICA_CLIENT_TOKENS) that may read
        the whole log (GET /v1/events, the stream): any other client sees the events of the
        workflows it started only.""",
    ),
    _s(
        "log-poll-interval",
        float,
        0.5,
        P,
        """How often, in seconds, the log's tailer looks for events while someone follows the
        log: on SQLite, and on PostgreSQL while its notifications are lost (they wake it at
        once otherwise; this replica's own changes always do); and how often a consumer
        group's waiting pull looks again for what nothing announces (another replica's acks).""",
        minimum=0.01,
        maximum=60,
        unit="s",
    ),
    _s(
        "stream-buffer",
        int,
        1000,
        P,
        """Events a follower of the stream (GET /v1/events/stream) may have waiting to be sent;
        one that falls further behind is disconnected with a reason (slow-reader) and resumes
        from its Last-Event-ID.""",
        minimum=10,
        maximum=1_000_000,
    ),
    _s(
        "stream-heartbeat",
        float,
        15.0,
        P,
        "Seconds between the stream's heartbeats (an SSE comment) when no event is sent.",
        minimum=0.1,
        maximum=300,
        unit="s",
    ),
    _s(
        "stream-send-timeout",
        float,
        10.0,
        P,
        """Seconds one write to a follower of the stream may take before it is disconnected
        (a reader that stopped reading).""",
        minimum=0.1,
        maximum=300,
        unit="s",
    ),
    _s(
        "stream-max-duration",
        float,
        600.0,
        P,
        """Seconds after which a follower of the stream is ended (reason max-duration) and
        resumes with its Last-Event-ID: long connections rotate, so followers spread over the
        replicas started since, and no proxy's idle or lifetime limit cuts one mid-event.""",
        minimum=0.01,
        maximum=86_400,
        unit="s",
    ),
    _s(
        "wait-default",
        float,
        5.0,
        P,
        "Seconds a command waits for its workflow's end when it sends no Prefer: wait.",
        minimum=0,
        maximum=3600,
        unit="s",
    ),
    _s(
        "wait-max",
        float,
        30.0,
        P,
        "The longest Prefer: wait honoured, seconds.",
        minimum=0,
        maximum=3600,
        unit="s",
    ),
    _s(
        "workflow-deadline",
        float,
        300.0,
        P,
        """Seconds after which a workflow starts no new step (a step in doubt is still
        asked).""",
        minimum=0,
        unit="s",
    ),
    _s(
        "replica-id",
        str,
        "",
        P,
        "This replica's name in leases and logs (default: random).",
    ),
    _s(
        "relay-concurrency",
        int,
        128,
        (PROTOOLS, FLOOR),
        """Calls in flight at once; the relay claims no more, and each service's connection
        pool holds as many.""",
        minimum=1,
        maximum=4096,
    ),
    _s(
        "max-in-flight",
        int,
        1024,
        ALL,
        """Requests served at once; beyond, 503 overloaded with Retry-After (health,
        readiness and metrics are never refused).""",
        minimum=1,
        maximum=1_000_000,
    ),
    _s(
        "admission-limit",
        int,
        64,
        P,
        """The most workflows admitted and unfinished at once per replica; the adaptive limit
        stays under it; beyond, a new command waits in the admission queue.""",
        minimum=1,
        maximum=100_000,
    ),
    _s(
        "admission-floor",
        int,
        4,
        P,
        """The fewest workflows in progress per replica the adaptive limit allows, whatever
        the latency.""",
        minimum=1,
        maximum=100_000,
    ),
    _s(
        "admission-queue-target",
        float,
        0.1,
        P,
        """CoDel's target, seconds: the queue stands (and sheds) once its oldest command has
        waited this long or more for a whole interval while the queue grew.""",
        minimum=0.001,
        maximum=60,
        unit="s",
    ),
    _s(
        "admission-queue-interval",
        float,
        0.25,
        P,
        """CoDel's interval, seconds: how long the queue must stand before it sheds, and stay
        empty before it stops standing.""",
        minimum=0.001,
        maximum=60,
        unit="s",
    ),
    _s(
        "admission-queue-timeout",
        float,
        2.0,
        P,
        """The longest a new command waits for a place (never past its Prefer: wait), seconds;
        then 503 with Retry-After.""",
        minimum=0,
        maximum=300,
        unit="s",
    ),
    _s(
        "admission-queue-overload-timeout",
        float,
        0.025,
        P,
        """While the queue stands, the newest command is served first and one waits at most
        this, seconds; then 503 with Retry-After.""",
        minimum=0,
        maximum=60,
        unit="s",
    ),
    _s(
        "admission-queue-max",
        int,
        1024,
        P,
        "The most commands waiting in the admission queue; beyond, 503 at once.",
        minimum=0,
        maximum=1_000_000,
    ),
    _s(
        "client-rate",
        float,
        1000.0,
        P,
        """Commands per second per client (bearer token); beyond, 429 with Retry-After. 0: no
        limit.""",
        minimum=0,
        maximum=1e9,
        unit="/s",
    ),
    _s(
        "client-burst",
        float,
        2000.0,
        P,
        "A client's burst allowance, commands.",
        minimum=1,
        maximum=1e9,
    ),
    _s(
        "backlog-max",
        int,
        10_000,
        P,
        """Outbox messages (workflows parked or in flight) beyond which new commands get 503;
        while a service is down, commands are accepted and parked up to this.""",
        minimum=1,
        maximum=100_000_000,
    ),
    _s(
        "breaker-failures",
        int,
        5,
        P,
        "Failures in a row (unreachable, timeout, 5xx) that open a service's circuit.",
        minimum=1,
        maximum=10_000,
    ),
    _s(
        "breaker-open-seconds",
        float,
        1.0,
        P,
        """A circuit's first open spell before a probe, seconds; it doubles while probes fail,
        up to 8 s, so a service that comes back is used within about 10 s.""",
        minimum=0.01,
        maximum=3600,
        unit="s",
    ),
    _s(
        "retry-budget-ratio",
        float,
        0.2,
        P,
        "Retries allowed per first attempt, per service; a retry over budget waits.",
        minimum=0,
        maximum=10,
    ),
    _s(
        "retry-budget-floor",
        float,
        5.0,
        P,
        "Retries per second always allowed per service.",
        minimum=0,
        maximum=1e6,
        unit="/s",
    ),
    _s(
        "downstream-limit",
        int,
        128,
        P,
        "The most calls in flight to one service; the adaptive limit moves under it.",
        minimum=1,
        maximum=4096,
    ),
    _s(
        "db-lock-timeout",
        float,
        2.0,
        ALL,
        """Seconds a statement waits for a lock (PostgreSQL lock_timeout, SQLite
        busy_timeout); keep it under protools' call timeout.""",
        minimum=0.01,
        maximum=600,
        unit="s",
    ),
    _s(
        "db-pool-size",
        int,
        16,
        ALL,
        """Connections to this service's database (PostgreSQL: mind max_connections across
        replicas).""",
        minimum=1,
        maximum=1000,
    ),
    _s(
        "db-statement-timeout",
        float,
        10.0,
        ALL,
        "PostgreSQL's statement_timeout: seconds a statement may run.",
        minimum=0.01,
        maximum=3600,
        unit="s",
    ),
    _s(
        "db-idle-timeout",
        float,
        30.0,
        ALL,
        """PostgreSQL's idle_in_transaction_session_timeout: seconds a transaction may sit
        idle before its session is closed.""",
        minimum=0.01,
        maximum=3600,
        unit="s",
    ),
    _s(
        "migrate-at-start",
        bool,
        True,
        ALL,
        """Apply the database's pending migrations when the service starts (replicas that
        start together are safe). Off: the deployment runs `metallica migrate SERVICE` first,
        and a service refuses to start on a schema older than it knows. A service never starts
        on a schema newer than it knows.""",
    ),
    _s(
        "password-length",
        int,
        20,
        (GENERATOR,),
        "The password's length (secrets), one character of each class at least.",
        minimum=1,
        maximum=1024,
    ),
    _s(
        "password-classes",
        str,
        "letters,digits,symbols",
        (GENERATOR,),
        "The character classes a password draws from, comma-separated, each used once at least.",
    ),
    _s(
        "generator-keys",
        str,
        None,
        (GENERATOR,),
        f"""The generator's key ring, {KEY_RING}; the first digests and encrypts everything
        new, every listed key verifies and decrypts what was made under its id. Rotate by
        putting a new key first and keeping the old ones (a key dropped from the list leaves
        its digests unverifiable and its live copies unreadable: 500 replay-unreadable).
        Errors name the entry and key id, never the secret. Prefer the variable or the
        file.""",
        required="(this or the file)",
    ),
    _s(
        "generator-keys-file",
        Path,
        None,
        (GENERATOR,),
        """Instead of METALLICA_GENERATOR_KEYS: a file of such entries, one a line or
        comma-separated, # comments (a mounted secret). Without either, the generator refuses
        to start; up, demo, the lab, the bench and the tests use a key of their data dir.""",
    ),
    _s(
        "protools-keys",
        str,
        None,
        P,
        f"""protools' key ring, {KEY_RING}, the same format and rotation as the generator's:
        it seals the password in its events and the mail's body in its outbox. Use a secret of
        its own. A key dropped while a workflow still needs what it sealed stops that
        workflow's delivery (logged with the key id).""",
        required="(this or the file)",
    ),
    _s(
        "protools-keys-file",
        Path,
        None,
        P,
        "Instead of METALLICA_PROTOOLS_KEYS: a file of such entries, as the generator's.",
    ),
    _s(
        "command-retention",
        float,
        86_400.0,
        P,
        """Seconds protools keeps a command's key once its workflow has ended (completed or
        failed); then a sweep forgets it, and the same key sent again is a new command (whose
        workflow fails with username-taken: the username has its password). A running
        workflow's key is kept however old. The events are kept.""",
        minimum=600,
        maximum=366 * 86_400,
        unit="s",
    ),
    _s(
        "idempotency-retention",
        float,
        86_400.0,
        (GENERATOR,),
        """Seconds a key's answer (the encrypted password) is kept for replays; then a sweep
        deletes it and a replay gets 410 idempotency-record-expired (the record stays: the same
        key with another body is still 422). Keep it far above protools' workflow deadline.""",
        minimum=600,
        maximum=366 * 86_400,
        unit="s",
    ),
    _s(
        "faults",
        bool,
        False,
        ALL,
        "Enables the /v1/faults endpoints (tests and the fault lab only).",
    ),
    _s(
        "log-level",
        str,
        "INFO",
        ALL,
        "Log level; JSON lines on stderr, where passwords never appear.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    ),
)

BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


def default(name: str) -> Any:
    """The default of the setting ``name`` (for the Settings dataclasses)."""
    return BY_NAME[name].default


def read_by(service: str) -> tuple[Setting, ...]:
    return tuple(setting for setting in SETTINGS if service in setting.readers)


# --- reading values ------------------------------------------------------------------------


def _missing(name: str) -> str:
    return f"{BY_NAME[name].variable} is required (set the variable or pass the flag)"


def value(options: Mapping[str, Any], name: str) -> Any:
    """The value of setting ``name`` in ``options`` (keyed by :attr:`Setting.key`), or its
    default when the options do not have it."""
    setting = BY_NAME[name]
    found = options.get(setting.key)
    return setting.default if found is None else found


def require(options: Mapping[str, Any], name: str) -> Any:
    """The value of a setting that must be given; :class:`ConfigError` when it is not."""
    value = options.get(BY_NAME[name].key)
    if value in (None, "", ()):
        raise ConfigError(_missing(name))
    return value


def urls(options: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """A required comma-separated list of URLs."""
    raw = require(options, name)
    found = tuple(url.strip() for url in str(raw).split(",") if url.strip())
    if not found:
        raise ConfigError(_missing(name))
    return found


# --- the README's table --------------------------------------------------------------------


def _readers(setting: Setting) -> str:
    readers = setting.readers & EVERY_SERVICE
    if readers == EVERY_SERVICE:
        return "all"
    return ", ".join(name for name in (PROTOOLS, GENERATOR, MAILER) if name in readers)


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:g}"


def describe_default(setting: Setting) -> str:
    """The default as the README writes it."""
    if setting.required:
        return setting.required
    value = setting.default
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return _number(value) + (f" {setting.unit}" if setting.unit == "s" else setting.unit)
    return f"`{value}`"


def _bounds(setting: Setting) -> str:
    low, high = setting.minimum, setting.maximum
    if low is None and high is None:
        return ""
    if high is None:
        return "" if not low else f" At least {_number(low)}."
    return f" From {_number(low or 0)} to {_number(high)}."


def markdown_table() -> str:
    """The README's configuration table: one row per documented setting."""
    lines = ["| variable | for | default | |", "|---|---|---|---|"]
    for setting in SETTINGS:
        if not setting.readers & EVERY_SERVICE:
            continue
        text = setting.help.replace("|", "\\|") + _bounds(setting)
        if setting.choices:
            text += " One of " + ", ".join(setting.choices) + "."
        lines.append(
            f"| `{setting.variable}` | {_readers(setting)} | {describe_default(setting)} | {text} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
