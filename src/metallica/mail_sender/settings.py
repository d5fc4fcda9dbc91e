"""mail-sender settings, read once at start (see the CLI for the variables)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from metallica.storage import Timeouts


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
