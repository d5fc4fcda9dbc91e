"""Password policies and password generation."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator, Sequence

import pytest

from metallica.password_generator.domain import (
    CHARACTER_CLASSES,
    PasswordPolicy,
    generate_password,
)


def test_the_default_policy_is_long_and_uses_every_class() -> None:
    policy = PasswordPolicy()
    assert policy.length == 20
    assert set(policy.classes) == {"letters", "digits", "symbols"}
    password = generate_password(policy)
    assert len(password) == 20
    assert set(password) <= set(policy.alphabet)


@pytest.mark.parametrize(
    ("length", "classes"),
    [
        (3, ("letters", "digits", "symbols")),
        (2, ("digits", "symbols")),
        (8, ("letters",)),
        (64, ("letters", "digits")),
        (1024, ("letters", "digits", "symbols")),
    ],
)
def test_passwords_follow_the_policy(length: int, classes: tuple[str, ...]) -> None:
    policy = PasswordPolicy(length, classes)
    allowed = set(policy.alphabet)
    for _ in range(200 if length < 100 else 5):
        password = generate_password(policy)
        assert len(password) == length
        assert set(password) <= allowed
        for name in classes:
            assert set(password) & set(CHARACTER_CLASSES[name]), name


def test_every_class_appears_even_in_the_shortest_passwords() -> None:
    # With length == number of classes, a uniform draw misses a class most of the time:
    # only rejection sampling makes each class appear in every password.
    policy = PasswordPolicy(3, ("letters", "digits", "symbols"))
    passwords = {generate_password(policy) for _ in range(2000)}
    for password in passwords:
        assert any(c in string.ascii_letters for c in password)
        assert any(c in string.digits for c in password)
        assert any(c in CHARACTER_CLASSES["symbols"] for c in password)
    assert len(passwords) > 1000  # and they are not all the same few


def test_a_draw_missing_a_class_is_rejected() -> None:
    draws: Iterator[str] = iter("aaaa" + "a1a1")

    def choice(alphabet: Sequence[str]) -> str:
        return next(draws)

    assert generate_password(PasswordPolicy(4, ("letters", "digits")), choice) == "a1a1"


def test_every_character_of_the_alphabet_can_be_drawn() -> None:
    policy = PasswordPolicy(4, ("letters", "digits", "symbols"))
    rng = random.Random(7)
    seen = set("".join(generate_password(policy, rng.choice) for _ in range(3000)))
    assert seen == set(policy.alphabet)


def test_the_alphabet_is_the_union_of_the_classes() -> None:
    assert PasswordPolicy(5, ("digits",)).alphabet == string.digits
    assert set(PasswordPolicy(5, ("letters", "symbols")).alphabet) == set(
        string.ascii_letters + CHARACTER_CLASSES["symbols"]
    )


@pytest.mark.parametrize(
    ("length", "classes"),
    [
        (2, ("letters", "digits", "symbols")),  # too short to hold one of each
        (0, ("letters",)),
        (-5, ("letters",)),
        (1025, ("letters",)),
        (10, ()),
        (10, ("letters", "emoji")),
        (10, ("Letters",)),
    ],
)
def test_invalid_policies_are_refused(length: int, classes: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="password"):
        PasswordPolicy(length, classes)


def test_parse_reads_a_comma_separated_list() -> None:
    assert PasswordPolicy.parse(12, "letters, digits") == PasswordPolicy(12, ("letters", "digits"))
    assert PasswordPolicy.parse(12, " symbols,,letters, ") == PasswordPolicy(
        12, ("symbols", "letters")
    )


@pytest.mark.parametrize(("length", "classes"), [(12, ""), (12, " , "), (12, "letters,unicode")])
def test_parse_refuses_bad_configuration(length: int, classes: str) -> None:
    with pytest.raises(ValueError, match="password classes"):
        PasswordPolicy.parse(length, classes)
