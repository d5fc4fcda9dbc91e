"""Named bearer tokens: parsing, rotation, and what an error may say."""

from __future__ import annotations

from pathlib import Path

import pytest

from metallica.web.auth import DEFAULT_NAME, Credentials, CredentialsError

ALICE = "alice-token-0123456789"
ALICE_NEXT = "alice-token-rotated-987"
BOB = "bob-token-abcdefghijklm"


def test_named_tokens_say_who_calls_and_several_may_be_valid_at_once() -> None:
    credentials = Credentials.parse(f"alice:{ALICE}, bob:{BOB},alice:{ALICE_NEXT}", source="V")
    assert credentials.identify(ALICE) == "alice"
    assert credentials.identify(ALICE_NEXT) == "alice"  # the rotation's new token
    assert credentials.identify(BOB) == "bob"
    assert credentials.identify("alice") is None
    assert credentials.identify("") is None
    assert credentials.identify(ALICE + "x") is None
    assert credentials.names == ["alice", "bob"]


def test_a_file_of_tokens_with_comments_and_a_lone_token(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"# clients\nalice:{ALICE}\n\nbob:{BOB}\n", encoding="utf-8")
    credentials = Credentials.load(file=file, single="legacy-token-000000", variable="V")
    assert credentials.identify(BOB) == "bob"
    assert credentials.identify("legacy-token-000000") == DEFAULT_NAME
    assert not Credentials.load(variable="V")


@pytest.mark.parametrize(
    "spec",
    [
        f"no-colon-{ALICE}",
        f"Alice:{ALICE}",  # names are lower case
        f"a b:{ALICE}",
        "alice:short",
        "alice:has a space in it ok",
    ],
)
def test_a_malformed_entry_is_refused_without_echoing_its_token(spec: str) -> None:
    with pytest.raises(CredentialsError) as caught:
        Credentials.parse(spec, source="METALLICA_CLIENT_TOKENS")
    message = str(caught.value)
    assert "METALLICA_CLIENT_TOKENS" in message
    assert "entry 1" in message
    token = spec.partition(":")[2] or spec
    assert token not in message


def test_an_unreadable_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="cannot read"):
        Credentials.load(file=tmp_path / "missing", variable="METALLICA_CLIENT_TOKENS")
