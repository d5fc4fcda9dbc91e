"""Password policy and generation. Pure: the random source is a parameter."""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from metallica.config import default

CHARACTER_CLASSES = {
    "letters": string.ascii_letters,
    "digits": string.digits,
    "symbols": "!#$%&()*+,-./:;<=>?@[]^_{|}~",
}


@dataclass(frozen=True)
class PasswordPolicy:
    """How long a password is and which character classes it draws from (one of each at least)."""

    length: int = default("password-length")
    classes: tuple[str, ...] = tuple(default("password-classes").split(","))

    def __post_init__(self) -> None:
        unknown = set(self.classes) - CHARACTER_CLASSES.keys()
        if unknown or not self.classes:
            raise ValueError(
                f"password classes must be among {sorted(CHARACTER_CLASSES)}, "
                f"got {list(self.classes)}"
            )
        if not len(self.classes) <= self.length <= 1024:
            raise ValueError(
                f"password length must be {len(self.classes)}..1024, got {self.length}"
            )

    @classmethod
    def parse(cls, length: int, classes: str) -> PasswordPolicy:
        """From configuration: a length and a comma-separated list of classes."""
        return cls(length, tuple(name.strip() for name in classes.split(",") if name.strip()))

    @property
    def alphabet(self) -> str:
        return "".join(CHARACTER_CLASSES[name] for name in self.classes)


def generate_password(
    policy: PasswordPolicy,
    choice: Callable[[Sequence[str]], str] = secrets.choice,
) -> str:
    """A password of ``policy.length`` characters holding at least one of each class.

    Draws uniformly from the whole alphabet and draws again until every class appears
    (rejection sampling keeps the distribution uniform over valid passwords).
    """
    alphabet = policy.alphabet
    while True:
        password = "".join(choice(alphabet) for _ in range(policy.length))
        if all(any(c in CHARACTER_CLASSES[name] for c in password) for name in policy.classes):
            return password
