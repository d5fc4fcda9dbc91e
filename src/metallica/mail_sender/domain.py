"""Mails as RFC 5322 messages. Pure: the date and the id are parameters."""

from __future__ import annotations

import datetime
import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.message import EmailMessage

from metallica import addresses
from metallica.errors import InvalidInput

MAX_SUBJECT = 998
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


# What a header value may not hold: CR, LF and every other character Python's email package
# (and many a mail client) reads as a line break (VT, FF, FS, GS, RS, NEL, U+2028, U+2029), and
# the other control characters (RFC 5322 has no place for them). TAB is folding white space.
# The ranges of a character class, read alike by Python and ECMA-262 (the OpenAPI document's
# pattern is made of them).
NOT_IN_HEADERS = r"\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029"
_FORBIDDEN_IN_HEADER = re.compile(f"[{NOT_IN_HEADERS}]")


def validate(to: str, subject: str, body: str) -> Mail:
    """A valid mail, or :class:`InvalidInput` naming the field."""
    for name, value in (("to", to), ("subject", subject)):
        if "\r" in value or "\n" in value:
            raise InvalidInput(f"'{name}' must not contain CR or LF", field=name)
        if _FORBIDDEN_IN_HEADER.search(value):
            raise InvalidInput(
                f"'{name}' must not contain line breaks or control characters", field=name
            )
    addresses.validate(to, "to")
    if len(subject) > MAX_SUBJECT:
        raise InvalidInput(f"'subject' is longer than {MAX_SUBJECT} characters", field="subject")
    if len(body) > MAX_BODY:
        raise InvalidInput(f"'body' is longer than {MAX_BODY} characters", field="body")
    return Mail(to, subject, body)


def render(mail: Mail, *, sender: str, mail_id: str, sent_at: float) -> bytes:
    """The mail as RFC 5322 bytes, with From, To, Date, Subject and Message-ID headers.

    A plain ASCII mail whose lines all fit in 78 characters (every mail protools sends) is
    written directly, byte for byte what :mod:`email` would write, at a tenth of the cost;
    anything else (non-ASCII, long lines to fold or encode) goes through :mod:`email`.
    """
    date = email.utils.format_datetime(datetime.datetime.fromtimestamp(sent_at, datetime.UTC))
    message_id = f"<{mail_id}@{sender_domain(sender)}>"
    headers = (
        ("From", sender),
        ("To", mail.to),
        ("Date", date),
        ("Subject", mail.subject),
        ("Message-ID", message_id),
    )
    body_lines = mail.body.splitlines() or [""]
    if (
        _SIMPLE_SENDER.fullmatch(sender)
        and all(_fits(f"{name}: {value}") for name, value in headers)
        and all(_fits(line) for line in body_lines)
    ):
        lines = [f"{name}: {value}" for name, value in headers]
        lines += [
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: 7bit",
            "MIME-Version: 1.0",
            "",
            *body_lines,
        ]
        return ("\r\n".join(lines) + "\r\n").encode("ascii")
    return _render_with_email(mail, sender=sender, date=date, message_id=message_id)


# "Name <local@domain>" or a bare address, in plain ASCII words: what email writes back as is.
_SIMPLE_SENDER = re.compile(
    r"(?:[A-Za-z0-9][A-Za-z0-9 ._-]* <[!-;=?-~]+@[A-Za-z0-9.-]+>)|[!-;=?-~]+@[A-Za-z0-9.-]+"
)


def sender_domain(sender: str) -> str:
    """The domain of the sender's address, for Message-IDs (``Name <a@b>`` gives ``b``)."""
    return email.utils.parseaddr(sender)[1].rsplit("@", 1)[-1] or "localhost"


def _fits(line: str) -> bool:
    """ASCII, printable, no more than 78 characters, no trailing space: written as is."""
    return len(line) <= 78 and line.isascii() and line.isprintable() and line == line.rstrip()


def _render_with_email(mail: Mail, *, sender: str, date: str, message_id: str) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = mail.to
    message["Date"] = date
    message["Subject"] = mail.subject
    message["Message-ID"] = message_id
    message.set_content(mail.body)
    return message.as_bytes()
