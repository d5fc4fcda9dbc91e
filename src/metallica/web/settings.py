"""What every service reads from its configuration: its database, who may call it, its
database timeouts and its own protection. Each service's ``settings.py`` builds on it, and
raises :class:`metallica.config.ConfigError` (one line, no secret) for anything missing or
wrong."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metallica import config
from metallica.storage import Timeouts, UnsupportedDatabaseUrl, check_url
from metallica.web.auth import Credentials, CredentialsError


@dataclass(frozen=True)
class Common:
    database_url: str
    api_token: str
    credentials: Credentials  # protools: its clients; the generator and the mailer: callers
    database_timeouts: Timeouts
    database_pool_size: int
    max_in_flight: int
    faults_enabled: bool
    migrate_at_start: bool


def common(options: Mapping[str, Any], service: str) -> Common:
    """The settings every service shares, checked: a database URL a backend supports, and
    someone allowed to call (``METALLICA_API_TOKEN`` or the service's named tokens)."""
    database_url = config.require(options, "database-url")
    try:
        check_url(database_url)
    except UnsupportedDatabaseUrl as error:
        raise config.ConfigError(error.detail) from None
    name = "client-tokens" if service == config.PROTOOLS else "service-tokens"
    try:
        credentials = Credentials.load(
            entries=options.get(name.replace("-", "_")),
            file=_path(options.get(f"{name}_file".replace("-", "_"))),
            variable=config.BY_NAME[name].variable,
        )
    except CredentialsError as error:
        raise config.ConfigError(str(error)) from None
    token = options.get("api_token") or ""
    if not token and not credentials:
        raise config.ConfigError(
            f"{config.BY_NAME[name].variable} (or METALLICA_API_TOKEN) is required"
        )
    return Common(
        database_url=database_url,
        api_token=token,
        credentials=credentials,
        database_timeouts=Timeouts(
            lock=config.value(options, "db-lock-timeout"),
            statement=config.value(options, "db-statement-timeout"),
            idle_in_transaction=config.value(options, "db-idle-timeout"),
        ),
        database_pool_size=config.value(options, "db-pool-size"),
        max_in_flight=config.value(options, "max-in-flight"),
        faults_enabled=bool(config.value(options, "faults")),
        migrate_at_start=bool(config.value(options, "migrate-at-start")),
    )


def _path(value: Any) -> Path | None:
    return Path(value) if value else None
