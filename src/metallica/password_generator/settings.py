"""password-generator settings, read once at start (see the CLI for the variables)."""

from __future__ import annotations

from dataclasses import dataclass, field

from metallica.password_generator.domain import PasswordPolicy
from metallica.storage import Timeouts


@dataclass(frozen=True)
class GeneratorSettings:
    database_url: str
    api_token: str
    policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    faults_enabled: bool = False
    database_timeouts: Timeouts = field(default_factory=Timeouts)
    database_pool_size: int = 16
    max_in_flight: int = 1024
