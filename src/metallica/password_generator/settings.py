"""password-generator settings, read once at start (see the CLI for the variables)."""

from __future__ import annotations

from dataclasses import dataclass

from metallica.password_generator.domain import PasswordPolicy


@dataclass(frozen=True)
class GeneratorSettings:
    database_url: str
    api_token: str
    policy: PasswordPolicy = PasswordPolicy()
    faults_enabled: bool = False
