"""A seeded run of malformed requests, raw on the socket, against the three services as real
processes: every one gets an HTTP answer (never a reset or silence), none a 5xx, and no service
logs a stack trace. What the requests try is listed in ``MALFORMED``; the seed makes the run the
same each time (bodies, headers and paths are drawn from it)."""

from __future__ import annotations

import contextlib
import json
import random
import socket
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from metallica.stack import LocalStack
from tests.integration.conftest import TOKEN

SEED = 20261202
ROUNDS = 12  # of every kind, for every service: 12 x 27 kinds x 3 services, ~970 requests

PATHS = {
    "protools": "/v1/workflows/password-creation",
    "generator": "/v1/passwords",
    "mailer": "/v1/mails",
}
GOOD_BODIES = {
    "protools": {"username": "fuzz"},
    "generator": {"username": "fuzz"},
    "mailer": {"to": "fuzz@example.com", "subject": "s", "body": "b"},
}

Request = Callable[[random.Random, str, str, str], bytes]


def http(
    method: str,
    path: str,
    headers: dict[str, str] | list[tuple[str, str]],
    body: bytes = b"",
    *,
    length: bool = True,
) -> bytes:
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    if length:
        pairs.append(("Content-Length", str(len(body))))
    head = "".join(f"{name}: {value}\r\n" for name, value in pairs)
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{head}\r\n".encode(
            "latin-1"
        )
        + body
    )


def json_headers(token: str, key: str = "fuzz-key") -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": key,
        "Content-Type": "application/json",
    }


def nested(depth: int) -> bytes:
    return b'{"username": ' + b"[" * depth + b"]" * depth + b"}"


def random_bytes(rng: random.Random, size: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(size))


def random_text(rng: random.Random, size: int) -> str:
    alphabet = "aé\u202e\u200b\x00\r\n'\";--/\\%{}[]<>\u0430\U0001f600 \t"
    return "".join(rng.choice(alphabet) for _ in range(size))


MALFORMED: dict[str, Request] = {
    "no token": lambda r, s, p, t: http("POST", p, {"Content-Type": "application/json"}, b"{}"),
    "wrong token": lambda r, s, p, t: http("POST", p, json_headers("x" * r.randrange(1, 300))),
    "token without Bearer": lambda r, s, p, t: http("POST", p, {"Authorization": t}, b"{}"),
    "odd Authorization": lambda r, s, p, t: http(
        "POST",
        p,
        {"Authorization": "Bearer " + random_text(r, 20).encode("utf-8").decode("latin-1")},
    ),
    "no Idempotency-Key": lambda r, s, p, t: http(
        "POST", p, {"Authorization": f"Bearer {t}", "Content-Type": "application/json"}, b"{}"
    ),
    "a 5,000-character key": lambda r, s, p, t: http("POST", p, json_headers(t, "k" * 5000), b"{}"),
    "a key with control bytes": lambda r, s, p, t: http(
        "POST", p, json_headers(t, "k\x01\x7f" + random_text(r, 5).encode().decode("latin-1"))
    ),
    "text/plain": lambda r, s, p, t: http(
        "POST", p, {**json_headers(t), "Content-Type": "text/plain"}, b'{"username": "a"}'
    ),
    "no Content-Type": lambda r, s, p, t: http(
        "POST", p, {"Authorization": f"Bearer {t}", "Idempotency-Key": "k"}, b"{}"
    ),
    "invalid JSON": lambda r, s, p, t: http("POST", p, json_headers(t), random_bytes(r, 40)),
    "JSON not an object": lambda r, s, p, t: http(
        "POST", p, json_headers(t), r.choice([b"[]", b"1", b'"s"', b"null", b"true"])
    ),
    "deeply nested JSON": lambda r, s, p, t: http(
        "POST", p, json_headers(t), nested(r.choice([20, 1000, 20000]))
    ),
    "a 2 MB body": lambda r, s, p, t: http(
        "POST", p, json_headers(t), b'{"username": "' + b"a" * 2_000_000 + b'"}'
    ),
    "a lying Content-Length": lambda r, s, p, t: http(
        "POST",
        p,
        {**json_headers(t), "Content-Length": "10"},
        b'{"username": "abcdefgh"}',
        length=False,
    ),
    "a huge Content-Length": lambda r, s, p, t: http(
        "POST", p, {**json_headers(t), "Content-Length": "99999999999"}, b"{}", length=False
    ),
    "unknown field": lambda r, s, p, t: http(
        "POST", p, json_headers(t), json.dumps({**GOOD_BODIES[s], "admin": True}).encode()
    ),
    "wrong types": lambda r, s, p, t: http(
        "POST",
        p,
        json_headers(t),
        json.dumps({k: r.choice([1, None, [], {}, True, 1e308]) for k in GOOD_BODIES[s]}).encode(),
    ),
    "hostile strings": lambda r, s, p, t: http(
        "POST",
        p,
        json_headers(t, f"k-{r.random()}"),
        json.dumps({k: random_text(r, r.randrange(1, 80)) for k in GOOD_BODIES[s]}).encode(),
    ),
    "huge strings": lambda r, s, p, t: http(
        "POST",
        p,
        json_headers(t, f"k-{r.random()}"),
        json.dumps({k: "a" * 60_000 for k in GOOD_BODIES[s]}).encode(),
    ),
    "NUL in the path": lambda r, s, p, t: http("GET", p + "/%00", json_headers(t)),
    "an encoded NUL as an id": lambda r, s, p, t: http(
        "GET", "/v1/workflows/%00/events", json_headers(t)
    ),
    "a very long path": lambda r, s, p, t: http("GET", "/" + "a" * 20_000, json_headers(t)),
    "a wrong method": lambda r, s, p, t: http(
        r.choice(["PUT", "DELETE", "PATCH"]), p, json_headers(t)
    ),
    "an unknown method": lambda r, s, p, t: http("BREW", p, json_headers(t)),
    "a header of 100 KB": lambda r, s, p, t: http(
        "POST", p, {**json_headers(t), "X-Big": "a" * 100_000}
    ),
    "a header name with spaces": lambda r, s, p, t: http(
        "POST", p, [("Bad Header", "x"), *json_headers(t).items()], b"{}"
    ),
    "garbage request line": lambda r, s, p, t: random_bytes(r, 60) + b"\r\n\r\n",
}


def exchange(url: str, raw: bytes) -> bytes:
    """Send ``raw`` and read the whole answer (the request says Connection: close)."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1"
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=15) as sock:
        # The server may answer and close before reading all of a huge request.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break  # an answer already read stands; none read is the failure below
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
def test_malformed_requests_get_answers_never_5xx_resets_or_tracebacks(
    stack: LocalStack,
) -> None:
    rng = random.Random(SEED)
    tokens = {"protools": TOKEN, "generator": stack.service_token, "mailer": stack.service_token}
    failures, tried, seen = [], 0, Counter[str]()
    for _ in range(ROUNDS):
        for service, path in PATHS.items():
            url = stack.urls(service)[0]
            for kind, build in MALFORMED.items():
                answer = exchange(url, build(rng, service, path, tokens[service]))
                tried += 1
                status_line = answer.split(b"\r\n", 1)[0]
                if not status_line.startswith(b"HTTP/1.1 "):
                    failures.append(f"{service}, {kind}: no answer ({answer[:60]!r})")
                    continue
                status = int(status_line.split()[1])
                seen[f"{kind}: {status}"] += 1
                if status >= 500:
                    failures.append(f"{service}, {kind}: {status_line.decode()}")
                if b"Traceback" in answer:
                    failures.append(f"{service}, {kind}: a traceback in the answer")
    assert tried >= 300
    assert not failures, failures[:10]
    # Each kind was refused as such, not let through: a 4xx for every one of them.
    assert all(status.split(": ")[1].startswith("4") for status in seen), seen
    every = ROUNDS * len(PATHS)
    for expected in ("a header of 100 KB: 431", "a 2 MB body: 413", "no token: 401"):
        assert seen[expected] == every, seen
    assert seen["text/plain: 415"] == seen["no Content-Type: 415"] == every, seen
    for log in sorted((stack.data_dir / "logs").glob("*.log")):
        assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace"), log.name
