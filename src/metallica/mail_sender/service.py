"""The mail use case: record the key, then deliver into the Maildir under the key's mail id.

The key is claimed first (first writer wins, in the database); the delivery is idempotent by
name, so a crash between the two, a retry, or two replicas at once all end with one mail. Once
the record says delivered, a repeat writes nothing, wherever the mail is now.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from metallica import deadlines
from metallica.errors import KeyReusedWithOtherBody
from metallica.faults import FaultPoints
from metallica.fingerprints import fingerprint
from metallica.mail_sender.domain import render, validate
from metallica.mail_sender.maildir import Maildir
from metallica.storage import Database, Row


class MailService:
    def __init__(
        self,
        database: Database,
        maildir: Maildir,
        *,
        sender: str,
        faults: FaultPoints | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._maildir = maildir
        self._sender = sender
        self._faults = faults or FaultPoints()
        self._clock = clock

    def send(
        self, idempotency_key: str, to: str, subject: str, body: str
    ) -> tuple[str, Path | None]:
        """Write the mail once; return its id and where it is (None: delivered earlier, and
        no longer where it was put: a mail client moved or fetched it)."""
        mail = validate(to, subject, body)
        deadlines.check()  # nobody waits for this any more: do not start
        body_fingerprint = fingerprint({"to": to, "subject": subject, "body": body})
        fresh_id, now = uuid.uuid4().hex, self._clock()
        with self._database.transaction() as tx:
            inserted = tx.fetch_one(
                "insert_mail",
                idempotency_key=idempotency_key,
                fingerprint=body_fingerprint,
                mail_id=fresh_id,
                created_at=now,
            )
            record: Row | None = {
                "fingerprint": body_fingerprint,
                "mail_id": fresh_id,
                "created_at": now,
                "delivered_at": None,
            }
            if inserted is None:  # a repeat: the first one's record
                record = tx.fetch_one("get_mail", idempotency_key=idempotency_key)
        assert record is not None
        if record["fingerprint"] != body_fingerprint:
            raise KeyReusedWithOtherBody()
        mail_id, created_at = str(record["mail_id"]), float(record["created_at"])
        name = Maildir.name_for(mail_id, created_at)
        if record["delivered_at"] is not None:
            # The record is the truth: the mail went out. Its file may have been moved or
            # fetched by a mail client since; writing it again would send it twice.
            return mail_id, self._maildir.find(name)
        self._faults.hit("before_write")
        content = render(mail, sender=self._sender, mail_id=mail_id, sent_at=created_at)
        # A first delivery needs no look around the Maildir: the name is new. A retry may find
        # it there already (a crash after the write, before the record said so).
        path = self._maildir.deliver(name, content, look_first=inserted is None)
        self._faults.hit("after_write")
        with self._database.transaction() as tx:
            tx.execute("mark_delivered", mail_id=mail_id, delivered_at=self._clock())
        return mail_id, path
