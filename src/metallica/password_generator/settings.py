"""password-generator settings, read once at start (see the CLI for the variables)."""

from __future__ import annotations

from dataclasses import dataclass, field

from metallica.password_generator.domain import PasswordPolicy
from metallica.password_generator.sealing import GeneratorKeyring
from metallica.password_generator.service import DEFAULT_RETENTION
from metallica.storage import Timeouts
from metallica.web.auth import DEFAULT_NAME, Credentials


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
    faults_enabled: bool = False
    database_timeouts: Timeouts = field(default_factory=Timeouts)
    database_pool_size: int = 16
    max_in_flight: int = 1024
    keys: GeneratorKeyring = field(default_factory=_ephemeral_keys)
    retention: float = DEFAULT_RETENTION
    sweep_interval: float = 60.0

    # Who may call, by name (protools' service credential), beside ``api_token``.
    callers: Credentials = field(default_factory=lambda: Credentials(()))

    @property
    def credentials(self) -> Credentials:
        return self.callers + Credentials.of([(DEFAULT_NAME, self.api_token)])
