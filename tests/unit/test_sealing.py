"""The generator's key ring: digests, sealed copies, rotation, and configuration errors that
never show a secret."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest

from metallica.config import ConfigError
from metallica.password_generator.sealing import (
    GeneratorKeyring,
    KeyConfigError,
    SealBroken,
    UnknownKeyId,
    keyring_from_env,
    load_keyring,
    local_keys_file,
    new_entry,
)

PASSWORD = "s3cret-Pa55word!xyz#"
RECORD = {"idempotency_key": "wf-1/generate_password", "username_key": "alice"}


def secret_b64() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def ring(*key_ids: str) -> tuple[GeneratorKeyring, dict[str, str]]:
    secrets_by_id = {key_id: secret_b64() for key_id in key_ids}
    text = ",".join(f"{key_id}:{value}" for key_id, value in secrets_by_id.items())
    return GeneratorKeyring.parse(text), secrets_by_id


# --- sealed copies ------------------------------------------------------------------------------


def test_a_sealed_copy_opens_to_the_password() -> None:
    keys, _ = ring("k1")
    sealed = keys.seal(PASSWORD, **RECORD)
    assert sealed.key_id == "k1"
    assert PASSWORD.encode() not in sealed.blob
    assert keys.open(sealed.key_id, sealed.blob, **RECORD) == PASSWORD


def test_each_seal_has_its_own_nonce() -> None:
    keys, _ = ring("k1")
    first, second = keys.seal(PASSWORD, **RECORD), keys.seal(PASSWORD, **RECORD)
    assert first.blob[:12] != second.blob[:12]
    assert first.blob != second.blob


def test_an_unknown_key_id_does_not_open() -> None:
    keys, _ = ring("k1")
    sealed = keys.seal(PASSWORD, **RECORD)
    with pytest.raises(UnknownKeyId, match="'k9'"):
        keys.open("k9", sealed.blob, **RECORD)


def test_another_key_under_the_same_id_does_not_open() -> None:
    keys, _ = ring("k1")
    impostor, _ = ring("k1")
    sealed = keys.seal(PASSWORD, **RECORD)
    with pytest.raises(SealBroken):
        impostor.open("k1", sealed.blob, **RECORD)


@pytest.mark.parametrize("position", [0, 5, 12, 20, -1])
def test_a_tampered_copy_does_not_open(position: int) -> None:
    keys, _ = ring("k1")
    blob = bytearray(keys.seal(PASSWORD, **RECORD).blob)
    blob[position] ^= 0x01
    with pytest.raises(SealBroken):
        keys.open("k1", bytes(blob), **RECORD)


def test_a_truncated_copy_does_not_open() -> None:
    keys, _ = ring("k1")
    blob = keys.seal(PASSWORD, **RECORD).blob
    for cut in (blob[:-1], blob[:12], b""):
        with pytest.raises(SealBroken):
            keys.open("k1", cut, **RECORD)


@pytest.mark.parametrize(
    "moved",
    [
        {"idempotency_key": "wf-2/generate_password", "username_key": "alice"},
        {"idempotency_key": "wf-1/generate_password", "username_key": "bob"},
        {"idempotency_key": "wf-1/generate_passwordalice", "username_key": ""},
    ],
)
def test_a_copy_moved_to_another_record_does_not_open(moved: dict[str, str]) -> None:
    keys, _ = ring("k1")
    sealed = keys.seal(PASSWORD, **RECORD)
    with pytest.raises(SealBroken):
        keys.open("k1", sealed.blob, **moved)


def test_rotation_the_new_key_seals_and_the_old_one_still_opens() -> None:
    old, secrets_by_id = ring("k1")
    sealed_before = old.seal(PASSWORD, **RECORD)
    digest_before = old.digest("alice", PASSWORD)

    new_secret = secret_b64()
    rotated = GeneratorKeyring.parse(f"k2:{new_secret},k1:{secrets_by_id['k1']}")
    assert rotated.current.key_id == "k2"
    assert rotated.key_ids == ("k2", "k1")
    assert rotated.open("k1", sealed_before.blob, **RECORD) == PASSWORD
    assert rotated.verify("alice", PASSWORD, "k1", digest_before.value)

    sealed_after = rotated.seal(PASSWORD, **RECORD)
    assert sealed_after.key_id == "k2"
    assert rotated.digest("alice", PASSWORD).key_id == "k2"
    with pytest.raises(UnknownKeyId):  # a replica still on the old ring cannot read it
        old.open("k2", sealed_after.blob, **RECORD)


# --- digests ------------------------------------------------------------------------------------


def test_a_digest_verifies_its_password_only() -> None:
    keys, _ = ring("k1")
    digest = keys.digest("alice", PASSWORD)
    assert len(digest.value) == 32
    assert keys.verify("alice", PASSWORD, digest.key_id, digest.value)
    assert not keys.verify("alice", PASSWORD + "x", digest.key_id, digest.value)
    assert not keys.verify("bob", PASSWORD, digest.key_id, digest.value)  # bound to the user
    assert keys.digest("bob", PASSWORD).value != digest.value  # equal passwords do not show
    assert keys.digest("alice", PASSWORD) == digest  # deterministic: it can be compared


def test_a_digest_depends_on_the_key() -> None:
    first, _ = ring("k1")
    second, _ = ring("k1")
    assert first.digest("alice", PASSWORD) != second.digest("alice", PASSWORD)
    with pytest.raises(UnknownKeyId):
        first.verify("alice", PASSWORD, "k2", first.digest("alice", PASSWORD).value)


def test_the_two_sub_keys_differ_from_each_other_and_from_the_secret() -> None:
    keys, secrets_by_id = ring("k1")
    master = base64.b64decode(secrets_by_id["k1"])
    key = keys.current
    assert key._digest_key not in (master, b"")
    assert master not in repr(keys).encode()


# --- configuration ------------------------------------------------------------------------------


def test_entries_parse_from_commas_lines_comments_and_url_safe_base64() -> None:
    raw = secrets.token_bytes(40)
    url_safe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    text = f"# rotation of May\nnew:{secret_b64()}\n\n old : {url_safe} , third:{secret_b64()}\n"
    keys = GeneratorKeyring.parse(text)
    assert keys.key_ids == ("new", "old", "third")
    assert keys.current.key_id == "new"


def test_repr_shows_key_ids_only() -> None:
    keys, secrets_by_id = ring("k1", "k2")
    shown = repr(keys) + repr(keys.current)
    assert "k1" in shown
    assert "k2" in shown
    for value in secrets_by_id.values():
        assert value not in shown


SECRET_LOOKING = "c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1uZXZlci1zaG93LXVwLWFueXdoZXJl"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "holds no key"),
        ("  ,  # nothing\n", "holds no key"),
        (SECRET_LOOKING, "entry 1 is not <key id>:<base64 secret>"),
        (f":{SECRET_LOOKING}", "entry 1 is not"),
        (f"k1:{SECRET_LOOKING}!!", "not base64"),
        ("k1:" + base64.b64encode(b"short-" + SECRET_LOOKING[:10].encode()).decode(), "32"),
        (f"bad id:{secret_b64()}", "key id"),
        (f"k1:{secret_b64()},k1:{secret_b64()}", "listed twice"),
    ],
    ids=["empty", "blank", "no-id", "empty-id", "not-base64", "short", "bad-id", "twice"],
)
def test_a_bad_key_ring_is_refused_without_showing_a_secret(text: str, says: str) -> None:
    with pytest.raises(KeyConfigError) as raised:
        GeneratorKeyring.parse(text)
    message = str(raised.value)
    assert says in message
    assert "METALLICA_GENERATOR_KEYS" in message
    for part in text.replace(",", ":").split(":"):
        if len(part.strip()) >= 16:
            assert part.strip() not in message
            assert part.strip()[:12] not in message


def test_keys_come_from_the_variable_or_the_file_not_both(tmp_path: Path) -> None:
    entry = new_entry("k1")
    path = tmp_path / "keys"
    path.write_text(f"# keys\n{entry}\n")
    assert load_keyring(entry, None).key_ids == ("k1",)
    assert load_keyring(None, path).key_ids == ("k1",)
    assert keyring_from_env({"METALLICA_GENERATOR_KEYS_FILE": str(path)}).key_ids == ("k1",)
    with pytest.raises(KeyConfigError, match="not both"):
        load_keyring(entry, path)
    with pytest.raises(KeyConfigError, match="needs its keys"):
        load_keyring(None, None)
    with pytest.raises(KeyConfigError, match="cannot read") as raised:
        load_keyring(None, tmp_path / "missing")
    assert entry.split(":")[1] not in str(raised.value)


def test_a_local_stack_gets_a_private_key_file_once(tmp_path: Path) -> None:
    path = local_keys_file(tmp_path / "data")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = path.read_text()
    assert local_keys_file(tmp_path / "data") == path
    assert path.read_text() == first  # kept across restarts of the stack
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no draft left behind
    assert load_keyring(None, path).current.key_id.startswith("local-")


# --- the service refuses to start without keys -------------------------------------------------


def _generator_options(**overrides: Any) -> dict[str, Any]:
    from metallica.config import SETTINGS

    options = {setting.key: setting.default for setting in SETTINGS}
    options |= {"faults": False, "database_url": "sqlite:///x.db", "api_token": "t"}
    return options | overrides


def test_serve_generator_refuses_to_start_without_keys() -> None:
    from metallica.services import build_app

    with pytest.raises(ConfigError, match="METALLICA_GENERATOR_KEYS") as raised:
        build_app("generator", _generator_options())
    assert "METALLICA_GENERATOR_KEYS_FILE" in str(raised.value)


def test_serve_generator_refuses_bad_keys_without_echoing_them() -> None:
    from metallica.services import build_app

    with pytest.raises(ConfigError) as raised:
        build_app("generator", _generator_options(generator_keys=f"k1:{SECRET_LOOKING}!!"))
    assert "not base64" in str(raised.value)
    assert SECRET_LOOKING[:12] not in str(raised.value)


def test_serve_generator_starts_with_keys() -> None:
    from metallica.services import build_app

    app = build_app("generator", _generator_options(generator_keys=new_entry("k1")))
    assert app is not None
