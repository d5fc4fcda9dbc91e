"""protools keeps passwords only sealed: in its events, its outbox and its command store, on
both backends, and a key rotation loses nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from metallica.mail_sender.http import create_app as create_mailer
from metallica.mail_sender.settings import MailerSettings
from metallica.password_generator.http import create_app as create_generator
from metallica.password_generator.settings import GeneratorSettings
from metallica.protools import engine, password_workflow, store
from metallica.protools.http import create_app
from metallica.protools.sealing import FieldSealer, ProtoolsKeyring, is_sealed
from metallica.protools.settings import ProtoolsSettings
from metallica.sealing import new_entry
from tests import raw_rows as stored
from tests.asgi_server import AsgiServer
from tests.conftest import MakeUrl
from tests.service.conftest import AUTH, TOKEN, TestClient, headers, migrated

CREATE = "/v1/workflows/password-creation"
UNREACHABLE = ("http://127.0.0.1:9",)  # the discard port: connections are refused


def settings(url: str, keys: ProtoolsKeyring, **overrides: Any) -> ProtoolsSettings:
    return ProtoolsSettings(
        url,
        TOKEN,
        keys=keys,
        retry_initial=0.05,
        retry_max=0.2,
        poll_interval=0.1,
        **overrides,
    )


def event_types(client: TestClient, workflow_id: str) -> list[str]:
    response = client.get(f"/v1/workflows/{workflow_id}/events", headers=AUTH)
    assert response.status_code == 200, response.text
    return [event["type"] for event in response.json()["events"]]


def test_passwords_are_sealed_at_rest_and_survive_a_key_rotation(
    database_url: MakeUrl, tmp_path: Path
) -> None:
    url, first_entry = database_url("protools"), new_entry("k1")
    keys = ProtoolsKeyring.parse(first_entry)
    with AsgiServer(create_generator(GeneratorSettings(database_url("generator"), TOKEN))) as gen:
        # The mailer is unreachable: the mail's call, its body holding the password, waits in
        # the outbox.
        app = create_app(settings(url, keys, generator_urls=(gen.url,), mailer_urls=UNREACHABLE))
        with TestClient(app, raise_server_exceptions=False) as client:
            accepted = client.post(
                CREATE, json={"username": "alice"}, headers=headers("k1", Prefer="wait=0")
            )
            assert accepted.status_code == 202, accepted.text
            workflow_id = accepted.json()["workflow_id"]
            until = time.monotonic() + 15
            while engine.ATTEMPT_FAILED not in event_types(client, workflow_id):
                assert time.monotonic() < until, "the mail step was never attempted"
                time.sleep(0.05)

        # The password, read the way protools reads it: through its keys.
        fields = FieldSealer(keys, password_workflow.SECRET_FIELDS)
        with migrated(url, "protools") as database, database.transaction(write=False) as tx:
            events = store.read_stream(tx, workflow_id)
            (pending,) = store.pending(tx)
        (generated,) = [e for e in events if e.type == engine.SUCCEEDED]
        password = fields.open(workflow_id, generated.data)["result"]["password"]
        assert isinstance(password, str)
        assert len(password) >= 16
        assert is_sealed(generated.data["result"]["password"])
        assert generated.data["result"]["username"] == "alice"  # the rest stays readable

        # In no column of no row of the events, the outbox or the commands, nor (SQLite) in
        # the database's files; the mail's body is sealed in the outbox, its address is not.
        stored.assert_nowhere(password, url, stored.TABLES["protools"])
        (outbox_row,) = stored.raw_rows(url, ["outbox"])["outbox"]
        assert '"sealed"' in str(outbox_row["payload"])
        assert "alice@example.com" in str(outbox_row["payload"])
        assert pending["step"] == password_workflow.MAIL

        # A rotation: the new key first, the old one kept. The workflow resumes, the mail
        # goes out with the password sealed under the old key, and the client gets it back.
        rotated = ProtoolsKeyring.parse(f"{new_entry('k2')},{first_entry}")
        spool = tmp_path / "maildir"
        mailer_app = create_mailer(MailerSettings(database_url("mailer"), TOKEN, spool))
        with AsgiServer(mailer_app) as mailer:
            app = create_app(
                settings(url, rotated, generator_urls=(gen.url,), mailer_urls=(mailer.url,))
            )
            with TestClient(app, raise_server_exceptions=False) as client:
                answer = client.get(
                    f"/v1/workflows/{workflow_id}", headers={**AUTH, "Prefer": "wait=20"}
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] == "completed"
                assert answer.json()["password"] == password
                listed = client.get(f"/v1/workflows/{workflow_id}/events", headers=AUTH)
                assert password not in listed.text  # redacted in every read of events
        mails = [path.read_text() for path in spool.rglob("*") if path.is_file()]
        assert any(password in mail for mail in mails)
        stored.assert_nowhere(password, url, stored.TABLES["protools"])
        with migrated(url, "protools") as database, database.transaction(write=False) as tx:
            kinds = {
                event.data["result"]["password"]["sealed"]
                for event in store.read_stream(tx, workflow_id)
                if event.type == engine.SUCCEEDED and "password" in event.data["result"]
            }
        assert kinds == {"k1"}  # sealed before the rotation, still opened after it
