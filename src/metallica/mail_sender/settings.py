"""mail-sender settings, read once at start. Defaults and help: :mod:`metallica.config`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metallica import config
from metallica.config import default, value
from metallica.storage import Timeouts
from metallica.web.auth import DEFAULT_NAME, Credentials
from metallica.web.settings import common


@dataclass(frozen=True)
class MailerSettings:
    database_url: str
    api_token: str
    maildir: Path
    sender: str = default("mail-from")
    faults_enabled: bool = default("faults")
    database_timeouts: Timeouts = field(default_factory=Timeouts)
    database_pool_size: int = default("db-pool-size")
    max_in_flight: int = default("max-in-flight")

    # Who may call, by name (protools' service credential), beside ``api_token``.
    callers: Credentials = field(default_factory=lambda: Credentials(()))

    migrate_at_start: bool = default("migrate-at-start")

    @property
    def credentials(self) -> Credentials:
        return self.callers + Credentials.of([(DEFAULT_NAME, self.api_token)])

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MailerSettings:
        """From configuration values (keys as :attr:`metallica.config.Setting.key`; a value
        missing takes its default), checked; :class:`ConfigError` says what is wrong."""
        shared = common(options, config.MAILER)
        return cls(
            shared.database_url,
            shared.api_token,
            Path(config.require(options, "maildir")),
            value(options, "mail-from"),
            faults_enabled=shared.faults_enabled,
            database_timeouts=shared.database_timeouts,
            database_pool_size=shared.database_pool_size,
            max_in_flight=shared.max_in_flight,
            callers=shared.credentials,
            migrate_at_start=shared.migrate_at_start,
        )
