"""Usernames, and the parsing of a password-creation command."""

from __future__ import annotations

from typing import Any

import pytest

from metallica import addresses, usernames
from metallica.errors import InvalidInput, InvalidUsername
from metallica.protools.password_workflow import parse_command


@pytest.mark.parametrize(
    "name", ["a", "Z", "7", "alice", "Alice.Smith", "a_b-c.d", "0day", "x" * 64, "a-" * 31 + "ab"]
)
def test_valid_usernames(name: str) -> None:
    assert usernames.validate(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".alice",
        "-alice",
        "_alice",
        "x" * 65,
        "alice smith",
        "alice@example.com",
        "alice\n",
        "\nalice",
        "alice/bob",
        "élodie",
        "\uff41lice",  # fullwidth 'a': a Unicode letter, not an ASCII one
        "alice\x00",
        "alice\r\nBcc: x",
        "\u202eecila",  # a right-to-left override: shows as "alice"
        "ali\u200bce",  # a zero-width space
        "\u0430lice",  # a Cyrillic a: looks like "alice"
        "alice'; DROP TABLE passwords; --",
        "alice' OR '1'='1",
        "a--b",
        "alice.",
        "a..b",
    ],
)
def test_invalid_usernames(name: str) -> None:
    with pytest.raises(InvalidUsername) as caught:
        usernames.validate(name)
    assert caught.value.status == 422
    assert caught.value.code == "invalid-username"
    assert caught.value.extensions == {"field": "username"}
    assert "a username is 1 to 64 ASCII letters and digits" in caught.value.detail


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "empty"),
        ("x" * 65, "longer than 64"),
        ("alice\x00", "control or formatting"),
        ("\u202eecila", "control or formatting"),
        ("\u0430lice", "non-ASCII"),
        ("alice' OR '1'='1", "not allowed"),
    ],
)
def test_a_refused_username_is_told_what_is_wrong(name: str, says: str) -> None:
    with pytest.raises(InvalidUsername) as caught:
        usernames.validate(name)
    assert says in caught.value.detail


def test_the_key_ignores_case() -> None:
    assert usernames.key("Alice") == usernames.key("alice") == usernames.key("ALICE") == "alice"
    assert usernames.key("alice") != usernames.key("alice2")
    assert usernames.key("A.B_C-D") == "a.b_c-d"


# --- parse_command -------------------------------------------------------------------------

DOMAIN = "example.com"


def test_a_command_with_a_username() -> None:
    assert parse_command({"username": "alice"}, DOMAIN) == ("alice", None)
    assert parse_command({"username": "alice", "email": None}, DOMAIN) == ("alice", None)


def test_a_command_with_an_email() -> None:
    assert parse_command({"username": "Alice", "email": "a@corp.example"}, DOMAIN) == (
        "Alice",
        "a@corp.example",
    )


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_command({"username": "alice", "role": "admin", "admin": True}, DOMAIN)
    assert caught.value.status == 422
    assert caught.value.extensions["field"] == "admin"
    assert "role" in caught.value.detail


@pytest.mark.parametrize(
    "body",
    [{}, {"email": "a@b.example"}, {"username": None}, {"username": 42}, {"username": ["alice"]}],
)
def test_a_missing_or_non_string_username_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidUsername) as caught:
        parse_command(body, DOMAIN)
    assert caught.value.extensions["field"] == "username"


@pytest.mark.parametrize("username", ["", "-x", "a b", "x" * 65])
def test_an_invalid_username_is_refused(username: str) -> None:
    with pytest.raises(InvalidUsername):
        parse_command({"username": username}, DOMAIN)


@pytest.mark.parametrize(
    "email", ["nope", "a@", "a@b@c.example", "a@b.example\r\nBcc: e@evil.example", 7, ["a@b.c"]]
)
def test_a_bad_email_is_refused(email: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_command({"username": "alice", "email": email}, DOMAIN)
    assert caught.value.extensions["field"] == "email"
    assert not isinstance(caught.value, InvalidUsername)


def test_a_recipient_the_mail_domain_cannot_make_is_refused_before_anything_is_stored() -> None:
    long_domain = ".".join(["d" * 60] * 3) + ".example"  # valid, but 64 + 1 + 191 > 254
    with pytest.raises(InvalidInput) as caught:
        parse_command({"username": "u" * 64}, long_domain)
    assert caught.value.extensions["field"] == "username"
    assert parse_command({"username": "u" * 60}, long_domain) == ("u" * 60, None)


@pytest.mark.parametrize("domain", ["", "exa mple.com", "-bad.example", "a@b", "x\nBcc:y"])
def test_a_bad_mail_domain_is_a_configuration_error(domain: str) -> None:
    with pytest.raises(ValueError, match="not a mail domain"):
        addresses.validate_domain(domain)
    assert addresses.validate_domain("mail.example.org") == "mail.example.org"
