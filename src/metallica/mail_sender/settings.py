"""mail-sender settings, read once at start (see the CLI for the variables)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MailerSettings:
    database_url: str
    api_token: str
    maildir: Path
    sender: str = "Metallica <no-reply@metallica.local>"
    faults_enabled: bool = False
