"""protools settings, read once at start. Defaults and help: :mod:`metallica.config`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metallica import addresses, config
from metallica.config import default, value
from metallica.protools.flow import FlowSettings
from metallica.protools.sealing import ProtoolsKeyring
from metallica.sealing import KeyConfigError
from metallica.storage import Timeouts
from metallica.web.auth import DEFAULT_NAME, NAME, Credentials
from metallica.web.settings import common


def _ephemeral_keys() -> ProtoolsKeyring:
    return ProtoolsKeyring.generate("ephemeral")


def _log_readers(text: str | None) -> frozenset[str]:
    """The client names of METALLICA_LOG_READERS; a name no token could carry is an error."""
    names = frozenset(part.strip() for part in (text or "").split(",") if part.strip())
    wrong = sorted(name for name in names if not NAME.fullmatch(name))
    if wrong:
        raise config.ConfigError(
            f"METALLICA_LOG_READERS: {wrong[0]!r} is not a client name (lower case, digits, . _ -)"
        )
    return names


@dataclass(frozen=True)
class ProtoolsSettings:
    """``keys``: the key ring that seals passwords in events and outbox messages. ``metallica
    serve`` refuses to start without configured keys; the default here, a random key that dies
    with the settings, is for in-process use (tests) only."""

    database_url: str
    api_token: str
    generator_urls: tuple[str, ...]
    mailer_urls: tuple[str, ...]
    mail_domain: str = default("mail-domain")
    call_timeout: float = default("call-timeout")
    connect_timeout: float = default("connect-timeout")
    retry_initial: float = default("retry-initial")
    retry_max: float = default("retry-max")
    lease_seconds: float = default("lease-seconds")
    commit_batch: int = default("commit-batch")
    poll_interval: float = default("poll-interval")
    log_readers: frozenset[str] = frozenset()
    log_poll_interval: float = default("log-poll-interval")
    command_retention: float = default("command-retention")
    stream_buffer: int = default("stream-buffer")
    stream_heartbeat: float = default("stream-heartbeat")
    stream_send_timeout: float = default("stream-send-timeout")
    stream_max_duration: float = default("stream-max-duration")
    wait_default: float = default("wait-default")
    wait_max: float = default("wait-max")
    workflow_deadline: float = default("workflow-deadline")
    replica_id: str = field(default=default("replica-id"))
    faults_enabled: bool = default("faults")
    relay_concurrency: int = default("relay-concurrency")
    database_timeouts: Timeouts = field(default_factory=Timeouts)
    database_pool_size: int = default("db-pool-size")
    max_in_flight: int = default("max-in-flight")
    migrate_at_start: bool = default("migrate-at-start")
    flow: FlowSettings = field(default_factory=FlowSettings)
    # Clients, by name, beside ``api_token`` (the client named "default").
    clients: Credentials = field(default_factory=lambda: Credentials(()))
    # protools' own credential towards the generator and the mailer ("": ``api_token``).
    service_token: str = ""
    keys: ProtoolsKeyring = field(default_factory=_ephemeral_keys)

    @property
    def client_credentials(self) -> Credentials:
        return self.clients + Credentials.of([(DEFAULT_NAME, self.api_token)])

    @property
    def outgoing_token(self) -> str:
        return self.service_token or self.api_token

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ProtoolsSettings:
        """From configuration values (keys as :attr:`metallica.config.Setting.key`; a value
        missing takes its default), checked; :class:`ConfigError` says what is wrong."""
        shared = common(options, config.PROTOOLS)
        service_token = options.get("service_token") or ""
        if not (service_token or shared.api_token):
            raise config.ConfigError("METALLICA_SERVICE_TOKEN (or METALLICA_API_TOKEN) is required")
        generator_urls = config.urls(options, "generator-urls")
        mailer_urls = config.urls(options, "mailer-urls")
        mail_domain = value(options, "mail-domain")
        try:
            addresses.validate_domain(mail_domain)
        except ValueError as error:
            raise config.ConfigError(f"METALLICA_MAIL_DOMAIN: {error}") from None
        try:  # no key, no start; the message names no secret
            keys = ProtoolsKeyring.load(
                options.get("protools_keys"), options.get("protools_keys_file")
            )
        except KeyConfigError as error:
            raise config.ConfigError(str(error)) from None
        return cls(
            database_url=shared.database_url,
            api_token=shared.api_token,
            generator_urls=generator_urls,
            mailer_urls=mailer_urls,
            mail_domain=mail_domain,
            call_timeout=value(options, "call-timeout"),
            connect_timeout=value(options, "connect-timeout"),
            retry_initial=value(options, "retry-initial"),
            retry_max=value(options, "retry-max"),
            lease_seconds=value(options, "lease-seconds"),
            commit_batch=value(options, "commit-batch"),
            poll_interval=value(options, "poll-interval"),
            log_readers=_log_readers(options.get("log_readers")),
            log_poll_interval=value(options, "log-poll-interval"),
            command_retention=value(options, "command-retention"),
            stream_buffer=value(options, "stream-buffer"),
            stream_heartbeat=value(options, "stream-heartbeat"),
            stream_send_timeout=value(options, "stream-send-timeout"),
            stream_max_duration=value(options, "stream-max-duration"),
            wait_default=value(options, "wait-default"),
            wait_max=value(options, "wait-max"),
            workflow_deadline=value(options, "workflow-deadline"),
            replica_id=value(options, "replica-id"),
            relay_concurrency=value(options, "relay-concurrency"),
            faults_enabled=shared.faults_enabled,
            database_timeouts=shared.database_timeouts,
            database_pool_size=shared.database_pool_size,
            max_in_flight=shared.max_in_flight,
            migrate_at_start=shared.migrate_at_start,
            clients=shared.credentials,
            service_token=service_token,
            keys=keys,
            flow=FlowSettings.from_options(options),
        )
