"""protools settings, read once at start (see the CLI for the variables and their defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

from metallica.protools.flow import FlowSettings
from metallica.protools.sealing import ProtoolsKeyring
from metallica.storage import Timeouts
from metallica.web.auth import DEFAULT_NAME, Credentials


def _ephemeral_keys() -> ProtoolsKeyring:
    return ProtoolsKeyring.generate("ephemeral")


@dataclass(frozen=True)
class ProtoolsSettings:
    """``keys``: the key ring that seals passwords in events and outbox messages. ``metallica
    serve`` refuses to start without configured keys; the default here, a random key that dies
    with the settings, is for in-process use (tests) only."""

    database_url: str
    api_token: str
    generator_urls: tuple[str, ...]
    mailer_urls: tuple[str, ...]
    mail_domain: str = "example.com"
    call_timeout: float = 3.0
    connect_timeout: float = 1.0
    retry_initial: float = 0.2
    retry_max: float = 10.0
    lease_seconds: float = 15.0
    poll_interval: float = 1.0
    wait_default: float = 5.0
    wait_max: float = 30.0
    workflow_deadline: float = 300.0
    replica_id: str = field(default="")
    faults_enabled: bool = False
    relay_concurrency: int = 128
    database_timeouts: Timeouts = field(default_factory=Timeouts)
    database_pool_size: int = 16
    max_in_flight: int = 1024
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
