"""Reading requests (Idempotency-Key, Prefer: wait, bodies), fingerprints, and redaction."""

from __future__ import annotations

import asyncio
import copy
import hashlib
from typing import Any

import pytest
from starlette.requests import Request
from starlette.types import Message

from metallica import fingerprints
from metallica.errors import (
    InvalidId,
    InvalidIdempotencyKey,
    InvalidInput,
    MissingIdempotencyKey,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from metallica.protools import engine, password_workflow
from metallica.protools.history import REDACTED, redact
from metallica.web import requests


def request(headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b"") -> Request:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": headers or [],
    }
    return Request(scope, receive)


def with_key(key: bytes) -> Request:
    return request([(b"idempotency-key", key)])


# --- Idempotency-Key -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [b"k", b"wf-1/generate_password", b"a b c", b"~" * 255, b"!\"#$%&'()*+,-./:;<=>?@[]^_`{|}"],
)
def test_a_valid_key_is_returned_as_given(key: bytes) -> None:
    assert requests.idempotency_key(with_key(key)) == key.decode()


def test_a_missing_key_is_a_400() -> None:
    with pytest.raises(MissingIdempotencyKey) as caught:
        requests.idempotency_key(request())
    assert caught.value.status == 400
    assert caught.value.code == "idempotency-key-missing"


@pytest.mark.parametrize(
    "key",
    [
        b"",
        b"k" * 256,
        b" leading",
        b"trailing ",
        b"tab\there",
        b"nul\x00",
        b"del\x7f",
        b"bell\x07",
        "café".encode(),
        b"\xff",
    ],
)
def test_a_bad_key_is_refused_as_invalid_not_missing(key: bytes) -> None:
    with pytest.raises(InvalidIdempotencyKey) as caught:
        requests.idempotency_key(with_key(key))
    assert caught.value.status == 400
    assert caught.value.code == "idempotency-key-invalid"


def test_an_overlong_key_is_refused_with_its_length_never_echoed() -> None:
    with pytest.raises(InvalidIdempotencyKey) as caught:
        requests.idempotency_key(with_key(b"s3cretish" * 600))
    assert "5400 characters long; at most 255" in caught.value.detail
    assert "s3cretish" not in caught.value.detail


# --- Prefer: wait ----------------------------------------------------------------------------


def prefer(value: str | None) -> float:
    headers = [] if value is None else [(b"prefer", value.encode())]
    return requests.prefer_wait(request(headers), default=5.0, maximum=30.0)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 5.0),
        ("", 5.0),
        ("wait=3", 3.0),
        ("wait=0", 0.0),
        ("wait=2.5", 2.5),
        ("respond-async, wait=10", 10.0),
        ("return=minimal; wait=7", 7.0),
        ("WAIT = 4", 4.0),
        ("wait=31", 30.0),
        ("wait=100000", 30.0),
        ("wait=abc", 5.0),
        ("wait=-1", 5.0),
        ("nowait=1", 5.0),
        ("respond-async", 5.0),
    ],
)
def test_prefer_wait(header: str | None, seconds: float) -> None:
    assert prefer(header) == seconds


# --- bodies ----------------------------------------------------------------------------------


JSON = [(b"content-type", b"application/json")]


def body_of(
    raw: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    fields: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    return asyncio.run(
        requests.json_object(request(JSON if headers is None else headers, raw), fields=fields)
    )


def test_a_json_object_is_read() -> None:
    assert body_of(b'{"username": "alice", "n": [1, 2]}') == {"username": "alice", "n": [1, 2]}
    charset = [(b"content-type", b"application/json; charset=utf-8")]
    assert body_of(b"{}", charset) == {}
    assert body_of(b"{}", [(b"content-type", b"application/merge-patch+json")]) == {}


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe", b"[1, 2]", b'"s"', b"null"])
def test_anything_but_a_json_object_is_a_422(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        body_of(raw)
    assert caught.value.status == 422


@pytest.mark.parametrize(
    "content_type", [None, b"text/plain", b"application/x-www-form-urlencoded"]
)
def test_a_body_that_does_not_say_it_is_json_is_a_415(content_type: bytes | None) -> None:
    headers = [] if content_type is None else [(b"content-type", content_type)]
    with pytest.raises(UnsupportedMediaType) as caught:
        body_of(b'{"username": "alice"}', headers)
    assert caught.value.status == 415


def test_an_oversized_body_is_a_413_whether_declared_or_streamed() -> None:
    raw = b'{"x": "' + b"a" * requests.MAX_BODY_BYTES + b'"}'
    with pytest.raises(PayloadTooLarge) as caught:
        body_of(raw)  # no Content-Length: refused as the stream passes the limit
    assert caught.value.status == 413
    declared = [*JSON, (b"content-length", str(len(raw)).encode())]
    with pytest.raises(PayloadTooLarge):
        body_of(raw, declared)


@pytest.mark.parametrize("depth", [17, 100, 5000])
def test_a_body_nested_too_deep_is_a_422_never_a_crash(depth: int) -> None:
    raw = b'{"a": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    with pytest.raises(InvalidInput) as caught:
        body_of(raw)
    assert "deeper" in caught.value.detail


def test_nesting_within_the_limit_is_read() -> None:
    raw = b'{"a": ' + b"[" * 15 + b"]" * 15 + b"}"
    assert body_of(raw)["a"] is not None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"username": "\\ud800"}',
        b'{"username": "a\\udfffb"}',
        b'{"\\ud83d": "x"}',
        b'{"a": [{"b": ["\\udc00"]}]}',
        b'{"username": "\xed\xa0\x80"}',  # a surrogate spelt in UTF-8 bytes (CESU-8)
    ],
)
def test_a_string_that_is_not_unicode_text_is_a_422(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        body_of(raw)
    assert caught.value.status == 422


def test_text_beyond_ascii_is_read() -> None:
    raw = '{"s": "é ✓ 😀 \\ud83d\\ude00", "é": 1}'.encode()
    assert body_of(raw) == {"s": "é ✓ 😀 😀", "é": 1}


def test_an_unknown_field_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput) as caught:
        body_of(b'{"username": "alice", "admin": true}', fields=("username", "email"))
    assert caught.value.extensions == {"field": "admin"}
    assert "admin" in caught.value.detail
    assert body_of(b'{"username": "alice"}', fields=("username", "email")) == {"username": "alice"}


@pytest.mark.parametrize("value", ["", "42", "not-a-uuid", "\x00", "../events", "1" * 1000])
def test_an_id_in_the_path_must_be_a_uuid(value: str) -> None:
    scoped = request()
    scoped.scope["path_params"] = {"workflow_id": value}
    with pytest.raises(InvalidId) as caught:
        requests.uuid_in_path(scoped, "workflow_id")
    assert caught.value.status == 400


def test_a_uuid_in_the_path_comes_back_canonical() -> None:
    scoped = request()
    scoped.scope["path_params"] = {"workflow_id": "6F9619FF-8B86-D011-B42D-00C04FC964FF"}
    assert requests.uuid_in_path(scoped, "workflow_id") == "6f9619ff-8b86-d011-b42d-00c04fc964ff"


def test_string_fields() -> None:
    body: dict[str, Any] = {"username": "alice", "n": 3}
    assert requests.string_field(body, "username") == "alice"
    assert requests.string_field(body, "email", required=False) is None
    with pytest.raises(InvalidInput) as missing:
        requests.string_field(body, "email")
    assert missing.value.extensions["field"] == "email"
    with pytest.raises(InvalidInput) as wrong:
        requests.string_field(body, "n")
    assert wrong.value.extensions["field"] == "n"


# --- fingerprints ----------------------------------------------------------------------------


def test_a_fingerprint_ignores_key_order() -> None:
    assert fingerprints.fingerprint(
        {"username": "alice", "email": None}
    ) == fingerprints.fingerprint({"email": None, "username": "alice"})
    nested_a = {"a": {"x": 1, "y": [1, {"p": 1, "q": 2}]}, "b": "é"}
    nested_b = {"b": "é", "a": {"y": [1, {"q": 2, "p": 1}], "x": 1}}
    assert fingerprints.fingerprint(nested_a) == fingerprints.fingerprint(nested_b)


def test_a_fingerprint_is_a_stable_digest() -> None:
    # Stored fingerprints outlive the process: the digest must not depend on it (no hash()).
    canonical = b'{"email":null,"username":"alice"}'
    expected = hashlib.sha256(canonical).hexdigest()
    assert fingerprints.fingerprint({"username": "alice", "email": None}) == expected


@pytest.mark.parametrize(
    "other",
    [
        {"username": "Alice"},
        {"username": "alice", "email": None},
        {"username": "alice "},
        {"user": "alice"},
        {"username": ["alice"]},
    ],
)
def test_a_different_body_has_a_different_fingerprint(other: dict[str, Any]) -> None:
    assert fingerprints.fingerprint(other) != fingerprints.fingerprint({"username": "alice"})


# --- redaction -------------------------------------------------------------------------------


SECRET_FIELDS = password_workflow.definition(
    deadline_seconds=1, retry=engine.RetryPolicy(1, 1)
).secret_fields


def test_redact_masks_passwords_and_mail_bodies_at_any_depth() -> None:
    data: dict[str, Any] = {
        "step": "generate_password",
        "result": {"username": "alice", "password": "s3cret"},
        "call": {"body": {"to": "a@b.example", "body": "Your password is s3cret"}},
        "history": [{"password": "old"}, {"nested": [{"password": "older"}]}, "s"],
        "password": None,
        "attempt": 2,
    }
    original = copy.deepcopy(data)
    assert redact(data, SECRET_FIELDS) == {
        "step": "generate_password",
        "result": {"username": "alice", "password": REDACTED},
        "call": {"body": {"to": "a@b.example", "body": REDACTED}},
        "history": [{"password": REDACTED}, {"nested": [{"password": REDACTED}]}, "s"],
        "password": None,
        "attempt": 2,
    }
    assert data == original  # the event itself is left alone
    assert "s3cret" not in repr(redact(data, SECRET_FIELDS))
