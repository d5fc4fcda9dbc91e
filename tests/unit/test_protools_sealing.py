"""protools' secret fields: sealed on their way into the store, opened on their way out, bound
to their workflow and their field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from metallica.config import ConfigError
from metallica.protools import password_workflow
from metallica.protools.sealing import FieldSealer, ProtoolsKeyring, is_sealed
from metallica.sealing import SealBroken, UnknownKeyId, new_entry

PASSWORD = "Zq8#kP2!vX9@mL4$wR7&"
WORKFLOW, OTHER = "6f1c1f0e-0000-4000-8000-000000000001", "6f1c1f0e-0000-4000-8000-000000000002"
SUCCEEDED = {
    "step": "generate_password",
    "attempt": 1,
    "result": {"username": "alice", "password": PASSWORD},
}
MAIL_CALL = {
    "step": "send_mail",
    "method": "POST",
    "path": "/v1/mails",
    "body": {"to": "alice@example.com", "subject": "Hi", "body": f"password: {PASSWORD}\n"},
    "idempotency_key": f"{WORKFLOW}/send_mail",
}


def sealer(keys: ProtoolsKeyring | None = None) -> FieldSealer:
    return FieldSealer(keys or ProtoolsKeyring.generate("k1"), password_workflow.SECRET_FIELDS)


@pytest.mark.parametrize("document", [SUCCEEDED, MAIL_CALL], ids=["event", "mail-call"])
def test_secret_fields_are_sealed_and_open_to_the_same_document(document: dict[str, Any]) -> None:
    fields = sealer()
    original = copy.deepcopy(document)
    sealed = fields.seal(WORKFLOW, document)
    assert document == original  # the document given is left alone
    assert PASSWORD not in json.dumps(sealed)
    assert fields.open(WORKFLOW, sealed) == document


def test_only_the_secret_fields_are_sealed() -> None:
    sealed = sealer().seal(WORKFLOW, MAIL_CALL)
    assert sealed["body"]["to"] == "alice@example.com"  # readable, for operators and queries
    assert sealed["body"]["subject"] == "Hi"
    assert sealed["idempotency_key"] == MAIL_CALL["idempotency_key"]
    assert is_sealed(sealed["body"]["body"])
    assert sealed["body"]["body"]["sealed"] == "k1"  # the key id, for rotation


def test_each_seal_has_its_own_nonce() -> None:
    fields = sealer()
    first, second = fields.seal(WORKFLOW, SUCCEEDED), fields.seal(WORKFLOW, SUCCEEDED)
    assert first["result"]["password"]["blob"] != second["result"]["password"]["blob"]


def test_a_value_moved_to_another_workflow_does_not_open() -> None:
    fields = sealer()
    sealed = fields.seal(WORKFLOW, SUCCEEDED)
    with pytest.raises(SealBroken):
        fields.open(OTHER, sealed)


def test_a_value_moved_to_another_field_does_not_open() -> None:
    fields = sealer()
    sealed = fields.seal(WORKFLOW, SUCCEEDED)
    moved = {"body": sealed["result"]["password"]}
    with pytest.raises(SealBroken):
        fields.open(WORKFLOW, moved)


def test_a_tampered_value_does_not_open() -> None:
    fields = sealer()
    sealed = fields.seal(WORKFLOW, SUCCEEDED)
    blob = sealed["result"]["password"]["blob"]
    sealed["result"]["password"]["blob"] = ("A" if blob[0] != "A" else "B") + blob[1:]
    with pytest.raises(SealBroken):
        fields.open(WORKFLOW, sealed)
    sealed["result"]["password"]["blob"] = "not base64!"
    with pytest.raises(SealBroken, match="not base64"):
        fields.open(WORKFLOW, sealed)


def test_rotation_the_new_key_seals_and_the_old_one_still_opens() -> None:
    old_entry, new = new_entry("old"), new_entry("new")
    before = sealer(ProtoolsKeyring.parse(old_entry)).seal(WORKFLOW, SUCCEEDED)
    rotated = sealer(ProtoolsKeyring.parse(f"{new},{old_entry}"))
    assert rotated.open(WORKFLOW, before) == SUCCEEDED
    assert rotated.seal(WORKFLOW, SUCCEEDED)["result"]["password"]["sealed"] == "new"
    with pytest.raises(UnknownKeyId, match="'old'"):  # retired too early
        sealer(ProtoolsKeyring.parse(new)).open(WORKFLOW, before)


def test_a_value_stored_in_clear_before_sealing_is_read_as_it_is() -> None:
    assert sealer().open(WORKFLOW, SUCCEEDED) == SUCCEEDED


def test_the_generator_and_protools_derive_unrelated_keys_from_one_secret() -> None:
    from metallica.password_generator.sealing import GeneratorKeyring

    entry = new_entry("k1")
    generator, protools = GeneratorKeyring.parse(entry), ProtoolsKeyring.parse(entry)
    sealed = protools.seal_bytes(b"x", b"aad")
    with pytest.raises(SealBroken):
        generator.open_bytes("k1", sealed.blob, b"aad")


# --- protools refuses to start without keys ----------------------------------------------------


def _protools_options(**overrides: Any) -> dict[str, Any]:
    from metallica.config import SETTINGS

    options = {setting.key: setting.default for setting in SETTINGS}
    options |= {
        "faults": False,
        "database_url": "sqlite:///x.db",
        "api_token": "t",
        "generator_urls": "http://127.0.0.1:9",
        "mailer_urls": "http://127.0.0.1:9",
    }
    return options | overrides


def test_serve_protools_refuses_to_start_without_keys() -> None:
    from metallica.services import build_app

    with pytest.raises(ConfigError, match="METALLICA_PROTOOLS_KEYS") as raised:
        build_app("protools", _protools_options())
    assert "METALLICA_PROTOOLS_KEYS_FILE" in str(raised.value)


def test_serve_protools_refuses_bad_keys_without_echoing_them() -> None:
    from metallica.services import build_app

    secret = "c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1uZXZlci1zaG93LXVwLWFueXdoZXJl"
    with pytest.raises(ConfigError) as raised:
        build_app("protools", _protools_options(protools_keys=f"k1:{secret}!!"))
    assert "not base64" in str(raised.value)
    assert secret[:12] not in str(raised.value)


def test_serve_protools_starts_with_keys() -> None:
    from metallica.services import build_app

    assert build_app("protools", _protools_options(protools_keys=new_entry("k1"))) is not None
