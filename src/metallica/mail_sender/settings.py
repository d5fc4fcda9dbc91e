"""mail-sender settings, read once at start (see the CLI for the variables)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from metallica.storage import Timeouts
from metallica.web.auth import DEFAULT_NAME, Credentials


@dataclass(frozen=True)
class MailerSettings:
    database_url: str
    api_token: str
    maildir: Path
    sender: str = "Metallica <no-reply@metallica.local>"
    faults_enabled: bool = False
    database_timeouts: Timeouts = field(default_factory=Timeouts)
    database_pool_size: int = 16
    max_in_flight: int = 1024

    # Who may call, by name (protools' service credential), beside ``api_token``.
    callers: Credentials = field(default_factory=lambda: Credentials(()))

    @property
    def credentials(self) -> Credentials:
        return self.callers + Credentials.of([(DEFAULT_NAME, self.api_token)])
