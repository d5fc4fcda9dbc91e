"""The console's session cookie and CSRF token: signed by the reader's token, nothing else."""

from __future__ import annotations

from metallica.protools.console.session import (
    LIFETIME,
    Session,
    csrf_token,
    csrf_valid,
    open_session,
    read_session,
)
from metallica.web.auth import Credentials

AUDITOR, ALICE = "auditor-token-0123456789", "alice-token-0123456789"
CREDENTIALS = Credentials.of([("auditor", AUDITOR), ("alice", ALICE)])
READERS = frozenset({"auditor"})
NOW = 1_800_000_000.0


def opened() -> tuple[Session, str]:
    result = open_session(CREDENTIALS, AUDITOR, readers=READERS, now=NOW)
    assert result is not None
    return result


def test_a_readers_token_opens_a_session_that_its_cookie_gives_back() -> None:
    session, cookie = opened()
    assert AUDITOR not in cookie
    assert read_session(CREDENTIALS, cookie, readers=READERS, now=NOW + 60) == session


def test_a_token_that_may_not_read_the_whole_log_or_no_token_opens_nothing() -> None:
    for presented in (ALICE, "", "auditor", AUDITOR + "x"):
        assert open_session(CREDENTIALS, presented, readers=READERS, now=NOW) is None


def test_a_cookie_expires_and_dies_with_its_token_or_its_readers_right() -> None:
    _, cookie = opened()
    assert read_session(CREDENTIALS, cookie, readers=READERS, now=NOW + LIFETIME + 1) is None
    rotated = Credentials.of([("auditor", "auditor-new-token-0123456789")])
    assert read_session(rotated, cookie, readers=READERS, now=NOW) is None
    assert read_session(CREDENTIALS, cookie, readers=frozenset(), now=NOW) is None


def test_a_cookie_altered_in_any_field_is_refused() -> None:
    _, cookie = opened()
    fields = cookie.split(".")
    for index in range(len(fields)):
        altered = list(fields)
        altered[index] = altered[index][:-1] + ("0" if altered[index][-1] != "0" else "1")
        assert read_session(CREDENTIALS, ".".join(altered), readers=READERS, now=NOW) is None
    assert read_session(CREDENTIALS, "v1.auditor", readers=READERS, now=NOW) is None


def test_the_csrf_token_is_the_sessions_own() -> None:
    session, _ = opened()
    other, _ = opened()
    token = csrf_token(CREDENTIALS, session)
    assert csrf_valid(CREDENTIALS, session, token)
    assert not csrf_valid(CREDENTIALS, other, token)
    assert not csrf_valid(CREDENTIALS, session, "")
