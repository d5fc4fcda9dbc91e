"""password-generator settings, read once at start. Defaults and help: :mod:`metallica.config`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metallica import config
from metallica.config import default, value
from metallica.password_generator.domain import PasswordPolicy
from metallica.password_generator.sealing import GeneratorKeyring, KeyConfigError, load_keyring
from metallica.storage import Timeouts
from metallica.web.auth import DEFAULT_NAME, Credentials
from metallica.web.settings import common


def _ephemeral_keys() -> GeneratorKeyring:
    return GeneratorKeyring.generate("ephemeral")


@dataclass(frozen=True)
class GeneratorSettings:
    """``keys``: the key ring of the digests and sealed copies. ``metallica serve`` refuses to
    start without configured keys; the default here, a random key that dies with the
    settings, is for in-process use (tests) only. ``retention``: seconds a key's answer (the
    sealed password) is kept for replays; keep it well above protools' workflow deadline and
    any retry of a step in doubt. ``sweep_interval``: seconds between expiry sweeps."""

    database_url: str
    api_token: str
    policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    faults_enabled: bool = default("faults")
    database_timeouts: Timeouts = field(default_factory=Timeouts)
    database_pool_size: int = default("db-pool-size")
    max_in_flight: int = default("max-in-flight")
    keys: GeneratorKeyring = field(default_factory=_ephemeral_keys)
    retention: float = default("idempotency-retention")
    sweep_interval: float = 60.0

    # Who may call, by name (protools' service credential), beside ``api_token``.
    callers: Credentials = field(default_factory=lambda: Credentials(()))

    migrate_at_start: bool = default("migrate-at-start")

    @property
    def credentials(self) -> Credentials:
        return self.callers + Credentials.of([(DEFAULT_NAME, self.api_token)])

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> GeneratorSettings:
        """From configuration values (keys as :attr:`metallica.config.Setting.key`; a value
        missing takes its default), checked; :class:`ConfigError` says what is wrong."""
        shared = common(options, config.GENERATOR)
        try:
            policy = PasswordPolicy.parse(
                value(options, "password-length"), value(options, "password-classes")
            )
        except ValueError as error:
            raise config.ConfigError(f"METALLICA_PASSWORD_*: {error}") from None
        try:  # no key, no start; the message names no secret
            keys = load_keyring(options.get("generator_keys"), options.get("generator_keys_file"))
        except KeyConfigError as error:
            raise config.ConfigError(str(error)) from None
        return cls(
            shared.database_url,
            shared.api_token,
            policy,
            faults_enabled=shared.faults_enabled,
            database_timeouts=shared.database_timeouts,
            database_pool_size=shared.database_pool_size,
            max_in_flight=shared.max_in_flight,
            callers=shared.credentials,
            keys=keys,
            retention=value(options, "idempotency-retention"),
            migrate_at_start=shared.migrate_at_start,
        )
