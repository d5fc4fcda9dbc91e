"""Usernames: what a valid one looks like, and the case-insensitive key that makes them unique."""

from __future__ import annotations

import re
import unicodedata

from metallica.errors import InvalidUsername

# ASCII letters and digits, with single separators (. _ -) between them: no Unicode look-alike
# ("alice" spelt with a Cyrillic a), no control or direction mark, no quote, space, semicolon
# or "--".
USERNAME = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")
MAX_LENGTH = 64
RULE = (
    f"a username is 1 to {MAX_LENGTH} ASCII letters and digits, with single '.', '_' or '-' "
    "between them"
)


def validate(username: str) -> str:
    """Return ``username`` if valid, else raise :class:`InvalidUsername` saying what is wrong."""
    if USERNAME.fullmatch(username) and len(username) <= MAX_LENGTH:
        return username
    raise InvalidUsername(f"{_what_is_wrong(username)}: {RULE}", field="username")


def _what_is_wrong(username: str) -> str:
    if not username:
        return "the username is empty"
    if len(username) > MAX_LENGTH:
        return f"the username is longer than {MAX_LENGTH} characters"
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in username):
        return (
            "the username holds a control or formatting character (NUL, CR, LF, a direction mark)"
        )
    if not username.isascii():
        return "the username holds non-ASCII characters (look-alikes of ASCII letters are refused)"
    return "the username holds characters or separators not allowed"


def key(username: str) -> str:
    """The uniqueness key: usernames differing only by case are the same user."""
    return username.lower()
