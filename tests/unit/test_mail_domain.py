"""Mails as RFC 5322 messages: validation and rendering."""

from __future__ import annotations

import email
import email.policy
import email.utils
from email.message import EmailMessage

import pytest

from metallica.errors import InvalidInput
from metallica.mail_sender import domain
from metallica.mail_sender.domain import Mail

SENDER = "Metallica <no-reply@metallica.local>"
SENT_AT = 1_700_000_000.0
BODY = (
    "Hello alice,\n\n"
    "Your new password is: p4ss!W0rd#é\n"
    "From here on, keep it safe.\n"
    ".\n" + "a long line " * 40 + "\n\n-- Metallica\n"
)


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def render(mail: Mail, mail_id: str = "0123abcd") -> EmailMessage:
    return parsed(domain.render(mail, sender=SENDER, mail_id=mail_id, sent_at=SENT_AT))


def test_a_rendered_mail_has_the_headers_and_parses_back() -> None:
    mail = domain.validate("alice@example.com", "Your password for alice", BODY)
    message = render(mail)
    assert message["From"] == SENDER
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Your password for alice"
    assert message["Message-ID"] == "<0123abcd@metallica.local>"
    assert email.utils.parsedate_to_datetime(message["Date"]).timestamp() == SENT_AT
    assert message.get_content_type() == "text/plain"
    # On the wire lines end with CRLF; the text, line by line, is the one given.
    assert message.get_content().replace("\r\n", "\n") == BODY


def test_rendering_is_deterministic_for_one_mail() -> None:
    # Two deliveries of the same mail (a retry, another replica) must write the same bytes.
    mail = domain.validate("alice@example.com", "Subject", "body\n")
    first = domain.render(mail, sender=SENDER, mail_id="m", sent_at=SENT_AT)
    assert domain.render(mail, sender=SENDER, mail_id="m", sent_at=SENT_AT) == first


def test_lines_are_crlf_terminated() -> None:
    raw = domain.render(
        domain.validate("a@b.example", "s", "one\ntwo\n"),
        sender=SENDER,
        mail_id="m",
        sent_at=SENT_AT,
    )
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_a_non_ascii_subject_round_trips() -> None:
    mail = domain.validate("alice@example.com", "Votre mot de passe — café", "corps\n")
    assert render(mail)["Subject"] == "Votre mot de passe — café"


@pytest.mark.parametrize(
    ("to", "subject", "field"),
    [
        ("alice@example.com\r\nBcc: eve@evil.test", "s", "to"),
        ("alice@example.com\n", "s", "to"),
        ("alice@example.com", "hello\r\nBcc: eve@evil.test", "subject"),
        ("alice@example.com", "hello\nworld", "subject"),
        ("alice@example.com", "hello\rworld", "subject"),
    ],
)
def test_cr_or_lf_in_a_header_is_refused(to: str, subject: str, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        domain.validate(to, subject, "body")
    assert caught.value.status == 422
    assert caught.value.extensions["field"] == field


@pytest.mark.parametrize(
    "subject",
    [
        *("a\x0bb", "a\x0cb", "a\x1cb", "a\x1db", "a\x1eb", "a\x85b", "a\u2028b", "a\u2029b"),
        *("\x00", "a\x1bb", "a\x7fb", "a\x9fb"),
    ],
)
def test_any_line_break_or_control_character_in_a_header_is_refused(subject: str) -> None:
    # Python's email package reads VT, FF, FS, GS, RS, NEL, U+2028 and U+2029 as line breaks
    # too, and raised on them (a 500, found by schemathesis); control characters have no place.
    for to, field in (("alice@example.com", "subject"), (f"{subject}@example.com", "to")):
        with pytest.raises(InvalidInput) as caught:
            domain.validate(to, subject if field == "subject" else "s", "body")
        assert caught.value.extensions["field"] == field


def test_tab_and_text_beyond_ascii_are_fine_in_a_subject() -> None:
    mail = domain.validate("alice@example.com", "a\tb — é ✓", "body")
    assert render(mail)["Subject"] == "a\tb — é ✓"


@pytest.mark.parametrize(
    "to",
    [
        "",
        "alice",
        "alice@",
        "@example.com",
        "a@b@example.com",
        "alice smith@example.com",
        "<alice@example.com>",
        "Alice <alice@example.com>",
        "alice@example.com, eve@evil.test",
        "alice@-example.com",
        "alice@example.com-",
        "a" * 250 + "@example.com",
        "alice\x00@example.com",
        "alice\x1b@example.com",
        "alice\x7f@example.com",
    ],
)
def test_a_bad_address_is_refused(to: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        domain.validate(to, "subject", "body")
    assert caught.value.extensions["field"] == "to"


@pytest.mark.parametrize("to", ["alice@example.com", "a.b+tag@mail.example.org", "x@localhost"])
def test_a_good_address_is_accepted(to: str) -> None:
    assert domain.validate(to, "s", "b") == Mail(to, "s", "b")


def test_oversized_subject_and_body_are_refused() -> None:
    with pytest.raises(InvalidInput) as subject:
        domain.validate("a@example.com", "s" * (domain.MAX_SUBJECT + 1), "b")
    assert subject.value.extensions["field"] == "subject"
    with pytest.raises(InvalidInput) as body:
        domain.validate("a@example.com", "s", "b" * (domain.MAX_BODY + 1))
    assert body.value.extensions["field"] == "body"
    assert domain.validate("a@example.com", "s" * domain.MAX_SUBJECT, "b" * domain.MAX_BODY)


@pytest.mark.parametrize(
    ("to", "subject", "body"),
    [
        (
            "alice@example.com",
            "Your password for alice",
            "Hello alice,\n\nYour new password is: a1!B2@c3#D4$e5%F6^g7&\n\n-- Metallica\n",
        ),
        ("x.y-z@mail.example.org", "s", "one line, no newline at the end"),
        ("a@b.example", "Hi", ""),
        ("a@b.example", "Hi", "trailing space here \nthen more"),
        ("a@b.example", "Hi", "x" * 79),
        ("a@b.example", "Grüße", "body"),
        ("a@b.example", "Hi", "körper\n"),
        ("a@b.example", "Hi", "From the start of a line\n.dot line\n"),
        ("a@b.example", "S" * 80, "body"),
        ("a@b.example", "Hi", "tab\there\n"),
    ],
)
@pytest.mark.parametrize("sender", [SENDER, "no-reply@metallica.local", "Ünïcode <a@b.example>"])
def test_the_fast_rendering_writes_what_the_email_package_writes(
    to: str, subject: str, body: str, sender: str
) -> None:
    mail = domain.validate(to, subject, body)
    fast = domain.render(mail, sender=sender, mail_id="m-1", sent_at=1_700_000_000.0)
    reference = domain._render_with_email(
        mail,
        sender=sender,
        date="Tue, 14 Nov 2023 22:13:20 +0000",
        message_id=f"<m-1@{domain.sender_domain(sender)}>",
    )
    assert fast == reference
