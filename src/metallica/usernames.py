"""Usernames: what a valid one looks like, and the case-insensitive key that makes them unique."""

from __future__ import annotations

import re

from metallica.errors import InvalidUsername

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate(username: str) -> str:
    """Return ``username`` if valid, else raise :class:`InvalidUsername`."""
    if not USERNAME.fullmatch(username):
        raise InvalidUsername(field="username")
    return username


def key(username: str) -> str:
    """The uniqueness key: usernames differing only by case are the same user."""
    return username.lower()
