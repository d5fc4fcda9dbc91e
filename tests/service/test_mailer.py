"""mail-sender in-process: the HTTP contract, one mail per key, replicas sharing a Maildir."""

from __future__ import annotations

import email
import email.policy
import os
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from starlette.types import ASGIApp

from metallica.mail_sender.http import create_app
from metallica.mail_sender.maildir import Maildir
from metallica.mail_sender.service import MailService
from metallica.mail_sender.settings import MailerSettings
from metallica.storage import open_database
from tests.conftest import MakeUrl
from tests.service.conftest import AUTH, TestClient, headers, migrated, problem_code

MAILS = "/v1/mails"
SENDER = "Metallica <no-reply@metallica.local>"
MAIL = {
    "to": "alice@example.com",
    "subject": "Your password for alice",
    "body": "Hello alice,\n\nYour new password is: Xy7#kq!2pL\n\n-- Metallica\n",
}
MakeClient = Callable[..., TestClient]


@pytest.fixture
def url(database_url: MakeUrl) -> str:
    return database_url("mailer")


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "maildir"


@pytest.fixture
def make_client(url: str, spool: Path, start_app: Callable[[ASGIApp], TestClient]) -> MakeClient:
    """``make(faults_enabled=False)``: a running app on the test's database."""

    def make(faults_enabled: bool = False) -> TestClient:
        return start_app(
            create_app(
                MailerSettings(url, "test-token", spool, SENDER, faults_enabled=faults_enabled)
            )
        )

    return make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def send(client: TestClient, key: str | None, body: Any) -> Any:
    return client.post(MAILS, json=body, headers=headers(key))


def delivered(spool: Path) -> list[Path]:
    return Maildir(spool).mails()


def parsed(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_mail_is_accepted_and_lands_in_new(client: TestClient, spool: Path) -> None:
    response = send(client, "m1", MAIL)
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id"}
    mail_id = body["id"]
    assert isinstance(mail_id, str)
    assert mail_id

    (path,) = delivered(spool)
    assert path.parent == spool / "new"
    assert mail_id in path.name
    assert list((spool / "tmp").iterdir()) == []
    message = parsed(path)
    assert message["From"] == SENDER
    assert message["To"] == MAIL["to"]
    assert message["Subject"] == MAIL["subject"]
    assert message["Date"] is not None
    assert message["Message-ID"] == f"<{mail_id}@metallica.local>"
    assert message.get_content().replace("\r\n", "\n") == MAIL["body"]


def test_a_repeated_key_gets_the_same_id_and_writes_nothing(
    client: TestClient, spool: Path
) -> None:
    first = send(client, "m1", MAIL).json()
    content = delivered(spool)[0].read_bytes()
    for _ in range(3):
        again = send(client, "m1", MAIL)
        assert again.status_code == 202
        assert again.json() == first
    (path,) = delivered(spool)
    assert path.read_bytes() == content


def test_a_repeat_after_the_reader_saw_the_mail_writes_nothing(
    client: TestClient, spool: Path
) -> None:
    first = send(client, "m1", MAIL).json()
    (path,) = delivered(spool)
    path.rename(spool / "cur" / f"{path.name}:2,S")
    assert send(client, "m1", MAIL).json() == first
    assert list((spool / "new").iterdir()) == []
    assert len(delivered(spool)) == 1


def test_another_key_is_another_mail(client: TestClient, spool: Path) -> None:
    first = send(client, "m1", MAIL).json()
    second = send(client, "m2", MAIL).json()
    assert first["id"] != second["id"]
    assert len(delivered(spool)) == 2


def test_a_key_reused_with_another_body_is_a_422(client: TestClient, spool: Path) -> None:
    send(client, "m1", MAIL)
    for change in ({"body": "another body"}, {"to": "bob@example.com"}, {"subject": "other"}):
        reused = send(client, "m1", {**MAIL, **change})
        assert reused.status_code == 422, change
        assert problem_code(reused) == "idempotency-key-reused"
    (path,) = delivered(spool)
    assert parsed(path).get_content().replace("\r\n", "\n") == MAIL["body"]


INVALID: list[tuple[dict[str, Any], str]] = [
    ({**MAIL, "subject": "hello\r\nBcc: eve@evil.example"}, "subject"),
    ({**MAIL, "subject": "hello\nworld"}, "subject"),
    # Found by schemathesis: line breaks other than CR and LF made the email package raise (500).
    ({**MAIL, "subject": "hello\u2028Bcc: eve@evil.example"}, "subject"),
    ({**MAIL, "subject": "hello\x0bworld"}, "subject"),
    ({**MAIL, "subject": "\x1e"}, "subject"),
    ({**MAIL, "subject": "hello\x00"}, "subject"),
    ({**MAIL, "to": "alice\x00@example.com"}, "to"),
    ({**MAIL, "to": "alice@example.com\r\nBcc: eve@evil.example"}, "to"),
    ({**MAIL, "to": "not an address"}, "to"),
    ({**MAIL, "to": "alice@example.com, eve@evil.example"}, "to"),
    ({**MAIL, "to": ""}, "to"),
    ({"subject": MAIL["subject"], "body": MAIL["body"]}, "to"),
    ({**MAIL, "subject": None}, "subject"),
    ({**MAIL, "body": 42}, "body"),
]


def test_invalid_mails_are_a_422_and_nothing_is_written(
    client: TestClient, url: str, spool: Path
) -> None:
    for index, (body, field) in enumerate(INVALID):
        response = send(client, f"bad-{index}", body)
        assert response.status_code == 422, body
        assert problem_code(response) == "invalid-body"
        assert response.json()["field"] == field
    assert delivered(spool) == []
    with migrated(url, "mailer") as database, database.transaction(write=False) as tx:
        for index in range(len(INVALID)):
            assert tx.fetch_one("get_mail", idempotency_key=f"bad-{index}") is None


def test_a_lone_surrogate_anywhere_in_the_body_is_a_422_not_a_crash(
    client: TestClient, spool: Path
) -> None:
    # JSON's escapes can spell a lone surrogate; nothing can hash, store or echo it (was a 500).
    for index, raw in enumerate(
        [
            b'{"to": "alice@example.com", "subject": "s", "body": "\\ud800"}',
            b'{"to": "\\udfffalice@example.com", "subject": "s", "body": "b"}',
            b'{"to": "alice@example.com", "subject": "\\ud83d", "body": "b"}',
            b'{"\\ud800": 1, "to": "alice@example.com", "subject": "s", "body": "b"}',
        ]
    ):
        response = client.post(
            MAILS,
            content=raw,
            headers=headers(f"s-{index}", **{"Content-Type": "application/json"}),
        )
        assert response.status_code == 422, raw
        assert problem_code(response) == "invalid-body"
    assert delivered(spool) == []


def test_an_absurd_attempt_number_is_ignored(client: TestClient, spool: Path) -> None:
    # Metallica-Attempt of 4,300 digits or more made int() raise in a middleware (was a 500).
    response = client.post(
        MAILS, json=MAIL, headers=headers("m1", **{"Metallica-Attempt": "9" * 5000})
    )
    assert response.status_code == 202, response.text
    assert len(delivered(spool)) == 1


def test_requests_without_a_key_or_a_token_are_refused(client: TestClient, spool: Path) -> None:
    missing_key = send(client, None, MAIL)
    assert missing_key.status_code == 400
    assert problem_code(missing_key) == "idempotency-key-missing"
    unauthenticated = client.post(MAILS, json=MAIL, headers={"Idempotency-Key": "m1"})
    assert unauthenticated.status_code == 401
    assert problem_code(unauthenticated) == "unauthorized"
    wrong = client.post(
        MAILS, json=MAIL, headers={"Idempotency-Key": "m1", "Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    not_json = client.post(
        MAILS, content=b"{", headers={**headers("m1"), "Content-Type": "application/json"}
    )
    assert not_json.status_code == 422
    assert problem_code(not_json) == "invalid-body"
    assert delivered(spool) == []
    assert client.get("/healthz").status_code == 200


def test_a_failure_after_writing_is_healed_by_the_retry(
    make_client: MakeClient, spool: Path
) -> None:
    client = make_client(faults_enabled=True)
    armed = client.post(
        "/v1/faults", json={"point": "after_write", "action": "error"}, headers=AUTH
    )
    assert armed.status_code == 201
    failed = send(client, "m1", MAIL)
    assert failed.status_code == 500
    assert problem_code(failed) == "injected-fault"
    (written,) = delivered(spool)

    retried = send(client, "m1", MAIL)
    assert retried.status_code == 202
    assert retried.json()["id"] in written.name
    assert delivered(spool) == [written]


def test_replicas_racing_one_key_write_one_mail(url: str, spool: Path) -> None:
    with migrated(url, "mailer"):
        pass
    replicas, threads_per_replica = 2, 4
    databases = [
        open_database(url, "mailer", pool_size=threads_per_replica) for _ in range(replicas)
    ]
    services = [MailService(db, Maildir(spool), sender=SENDER) for db in databases]
    barrier = threading.Barrier(replicas * threads_per_replica)
    results: list[str | Exception] = []
    lock = threading.Lock()

    def run(service: MailService) -> None:
        try:
            barrier.wait(timeout=10)
            mail_id, path = service.send("same-key", MAIL["to"], MAIL["subject"], MAIL["body"])
            assert path is not None
            assert path.exists()
            outcome: str | Exception = mail_id
        except Exception as error:
            outcome = error
        with lock:
            results.append(outcome)

    threads = [
        threading.Thread(target=run, args=(services[index % replicas],))
        for index in range(replicas * threads_per_replica)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for database in databases:
            database.close()

    assert all(isinstance(result, str) for result in results), results
    assert len(results) == replicas * threads_per_replica
    assert len(set(results)) == 1
    (path,) = delivered(spool)
    assert str(results[0]) in path.name
    assert list((spool / "tmp").iterdir()) == []


def test_a_delivered_mail_is_never_written_again_even_once_moved_or_fetched(
    url: str, spool: Path
) -> None:
    with migrated(url, "mailer") as database:
        service = MailService(database, Maildir(spool), sender=SENDER)
        mail_id, path = service.send("k-moved", MAIL["to"], MAIL["subject"], MAIL["body"])
        assert path is not None
        path.unlink()  # a mail client fetched it (POP) and deleted it from the spool

        again_id, again_path = service.send("k-moved", MAIL["to"], MAIL["subject"], MAIL["body"])

    assert again_id == mail_id
    assert again_path is None
    assert delivered(spool) == []  # not written a second time: the record says it went out


def test_a_crashed_deliverys_leftovers_in_tmp_are_cleaned_at_start(
    url: str, spool: Path, start_app: Callable[[ASGIApp], TestClient]
) -> None:
    maildir = Maildir(spool)
    stale, fresh = (
        spool / "tmp" / "1.Mdead.metallica.9.ab",
        spool / "tmp" / "2.Mlive.metallica.9.cd",
    )
    stale.write_bytes(b"half a mail")
    fresh.write_bytes(b"another replica's delivery, in progress")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    start_app(create_app(MailerSettings(url, "test-token", spool, SENDER)))

    assert sorted(p.name for p in (spool / "tmp").iterdir()) == [fresh.name]
    assert maildir.clean_tmp(older_than=-1) == 1
