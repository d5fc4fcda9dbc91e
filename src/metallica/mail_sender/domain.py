"""Mails as RFC 5322 messages. Pure: the date and the id are parameters."""

from __future__ import annotations

import email.policy
import email.utils
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


def validate(to: str, subject: str, body: str) -> Mail:
    """A valid mail, or :class:`InvalidInput` naming the field."""
    for name, value in (("to", to), ("subject", subject)):
        if "\r" in value or "\n" in value:
            raise InvalidInput(f"'{name}' must not contain CR or LF", field=name)
    addresses.validate(to, "to")
    if len(subject) > MAX_SUBJECT:
        raise InvalidInput(f"'subject' is longer than {MAX_SUBJECT} characters", field="subject")
    if len(body) > MAX_BODY:
        raise InvalidInput(f"'body' is longer than {MAX_BODY} characters", field="body")
    return Mail(to, subject, body)


def render(mail: Mail, *, sender: str, mail_id: str, sent_at: float) -> bytes:
    """The mail as RFC 5322 bytes, with From, To, Date, Subject and Message-ID headers."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = mail.to
    message["Date"] = email.utils.formatdate(sent_at, usegmt=True)
    message["Subject"] = mail.subject
    message["Message-ID"] = f"<{mail_id}@{sender.rsplit('@', 1)[-1]}>"
    message.set_content(mail.body)
    return message.as_bytes()
