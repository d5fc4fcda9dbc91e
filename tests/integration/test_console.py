"""The web console over real HTTP, on real processes: who may open it, what its cookie and
headers are, what its pages show, and that no password ever reaches it. (What a person sees in
a browser: ``tests/browser``.)"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from metallica.client import ProtoolsClient
from metallica.stack import LocalStack
from tests.integration.conftest import StackFactory
from tests.waiting import eventually

pytestmark = pytest.mark.slow

ALICE, AUDITOR = "alice-token-0123456789", "auditor-token-0123456789"
CLIENTS = {
    "METALLICA_CLIENT_TOKENS": f"alice:{ALICE},auditor:{AUDITOR}",
    "METALLICA_LOG_READERS": "auditor",
    "METALLICA_LOG_POLL_INTERVAL": "0.1",
    "METALLICA_STREAM_HEARTBEAT": "0.2",
    "METALLICA_LOG_LEVEL": "INFO",  # the console's actions are logged at INFO
}
WAIT = 10.0


@pytest.fixture
def stack(stack_factory: StackFactory) -> LocalStack:
    return stack_factory(**CLIENTS)


@pytest.fixture
def url(stack: LocalStack) -> str:
    return stack.urls("protools")[0]


@pytest.fixture
def browser(url: str) -> Iterator[httpx.Client]:
    """A client that keeps cookies, as a browser does, and follows no redirect by itself."""
    with httpx.Client(base_url=url, timeout=WAIT) as client:
        yield client


def log_in(browser: httpx.Client, token: str = AUDITOR) -> httpx.Response:
    return browser.post("/console/login", data={"token": token})


def create(url: str, username: str) -> dict[str, Any]:
    with ProtoolsClient(url, ALICE) as alice:
        answer = alice.create_password(username, wait=WAIT)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_without_a_session_every_page_sends_to_the_login_page_and_fragments_are_refused(
    browser: httpx.Client,
) -> None:
    for page in ("/console", "/console/workflows", "/console/log", "/console/health"):
        answer = browser.get(page)
        if page == "/console":
            answer = browser.get(answer.headers["location"])
        assert answer.status_code == 303, page
        assert answer.headers["location"] == "/console/login"
    for fragment in ("/console/workflows/rows", "/console/health/panel", "/console/stream"):
        assert browser.get(fragment).status_code == 401, fragment
    login = browser.get("/console/login")
    assert login.status_code == 200
    assert 'type="password"' in login.text
    assert "script-src 'self'" in login.headers["content-security-policy"]
    assert "'unsafe-inline'" not in login.headers["content-security-policy"]


def test_only_a_log_readers_token_opens_a_session_and_its_cookie_holds_no_token(
    browser: httpx.Client,
) -> None:
    for token in (ALICE, "not-a-token-at-all-0000", ""):
        refused = log_in(browser, token)
        assert refused.status_code == 401
        assert "cannot open the console" in refused.text
        assert "set-cookie" not in refused.headers
        assert token == "" or token not in refused.text  # never echoed

    opened = log_in(browser)
    assert opened.status_code == 303
    assert opened.headers["location"] == "/console/workflows"
    cookie = opened.headers["set-cookie"]
    assert cookie.startswith("metallica_console=")
    for flag in ("HttpOnly", "SameSite=strict", "Path=/console"):
        assert flag.lower() in cookie.lower(), flag
    assert AUDITOR not in cookie
    page = browser.get("/console/workflows")
    assert page.status_code == 200
    assert "auditor" in page.text
    assert AUDITOR not in page.text


def test_a_forged_or_altered_cookie_is_no_session(browser: httpx.Client, url: str) -> None:
    log_in(browser)
    good = browser.cookies["metallica_console"]
    version, reader, expires, nonce, signature = good.split(".")
    forgeries = [
        ".".join((version, reader, str(int(expires) + 3600), nonce, signature)),  # extended
        ".".join((version, "alice", expires, nonce, signature)),  # another client
        ".".join((version, reader, expires, nonce, signature[:-2] + "AA")),
        "garbage",
    ]
    for forged in forgeries:
        with httpx.Client(base_url=url, cookies={"metallica_console": forged}) as other:
            assert other.get("/console/workflows/rows").status_code == 401, forged


def test_the_pages_show_every_clients_workflows_and_never_a_password(
    browser: httpx.Client, url: str, stack: LocalStack
) -> None:
    created = create(url, "carol")
    password = created["password"]
    workflow_id = created["workflow_id"]
    log_in(browser)

    listing = browser.get("/console/workflows")
    assert workflow_id in listing.text
    assert "carol" in listing.text
    found = browser.get("/console/workflows/rows", params={"q": "car"})
    assert workflow_id in found.text
    assert workflow_id in browser.get("/console/workflows/rows", params={"q": workflow_id}).text
    assert workflow_id not in browser.get("/console/workflows/rows", params={"q": "dave"}).text
    failed = browser.get("/console/workflows/rows", params={"status": "failed"})
    assert workflow_id not in failed.text

    page = browser.get(f"/console/workflows/{workflow_id}")
    assert page.status_code == 200
    assert "<svg" in page.text
    generator, mailer = stack.urls("generator")[0], stack.urls("mailer")[0]
    assert f"generate_password attempt 1 to {generator}: succeeded" in page.text
    assert f"send_mail attempt 1 to {mailer}: succeeded" in page.text
    assert "WorkflowCompleted" in page.text

    answers = [
        listing,
        page,
        browser.get(f"/console/workflows/{workflow_id}/panel"),
        browser.get("/console/log"),
        browser.get("/console/health"),
        browser.get("/console/health/panel"),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.url
        assert password not in answer.text, f"the password is in {answer.url}"
        assert answer.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_the_health_page_shows_this_replicas_admission_services_and_readiness(
    browser: httpx.Client, stack: LocalStack
) -> None:
    log_in(browser)
    panel = browser.get("/console/health/panel").text
    for service in ("generator", "mailer"):
        replica = stack.urls(service)[0]
        ready = '<span class="badge completed">ready'
        assert f"<td>{service}</td><td>{replica}</td><td>{ready}" in panel
    assert 'id="readiness">ready<' in panel
    for service in ("generator", "mailer"):
        assert f"<td>{service}</td>" in panel
    assert "breaker-closed" in panel
    assert re.search(r'id="admission-limit">\d+<', panel)


def replica_rows(panel: str) -> dict[str, str]:
    """The health panel's protools replicas: each one's row, as text."""
    rows = re.findall(r'<tr data-replica="([^"]+)"[^>]*>(.*?)</tr>', panel)
    return {replica: re.sub(r"<[^>]+>", " ", row) for replica, row in rows}


def test_the_health_page_shows_every_protools_replica_one_killed_silent_one_stopped_so(
    stack_factory: StackFactory,
) -> None:
    stack = stack_factory(replicas=2, **CLIENTS)
    first, second = (replica.name for replica in stack.members["protools"])
    with httpx.Client(base_url=stack.urls("protools")[0], timeout=WAIT) as browser:
        log_in(browser)
        shown: dict[str, str] = {}

        def second_is(state: str) -> Callable[[], bool]:
            def check() -> bool:
                shown.clear()
                shown.update(replica_rows(browser.get("/console/health/panel").text))
                return f" {state} " in shown.get(second, "")

            return check

        assert eventually(second_is("ready"), WAIT), shown
        assert "(this one)" in shown[first]
        assert "(this one)" not in shown[second]
        assert "generator closed, mailer closed" in shown[second]
        stack.kill("protools", 1)  # no word from it: silent once its last report is too old
        assert eventually(second_is("silent"), 3 * WAIT), shown
        stack.start_replica("protools", 1)
        assert eventually(second_is("ready"), WAIT), shown
        stack.stop_replica("protools", 1)  # it says so as it stops
        assert eventually(second_is("stopped"), WAIT), shown
        assert " ready " in shown[first]


def test_the_stream_follows_new_events_with_secrets_masked(browser: httpx.Client, url: str) -> None:
    log_in(browser)
    seen: list[dict[str, Any]] = []
    finished = threading.Event()

    def follow() -> None:
        with browser.stream("GET", "/console/stream", timeout=WAIT) as answer:
            assert answer.status_code == 200
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    if seen[-1]["type"] == "WorkflowCompleted":
                        finished.set()
                        return

    follower = threading.Thread(target=follow, name="console-follower", daemon=True)
    follower.start()
    created = create(url, "erin")
    assert finished.wait(WAIT), f"the stream gave {seen}"
    follower.join(WAIT)
    assert {event["workflow_id"] for event in seen} == {created["workflow_id"]}
    assert created["password"] not in json.dumps(seen)


def test_a_page_follows_the_log_from_where_it_was_read_so_nothing_between_is_missed(
    browser: httpx.Client, url: str
) -> None:
    # A workflow that completes after its page was read, but before the page's script has
    # connected its stream, must still reach the page: CI saw one stay "running" for good when
    # the stream started at the head it met on connecting.
    log_in(browser)
    page = browser.get("/console/workflows").text
    match = re.search(r'data-after="(\d+)"', page)
    assert match, "the page says where its script follows the log from"
    read_at = int(match.group(1))
    created = create(url, "frank")  # started and completed before the stream is connected

    def events_after(position: str, *, header: bool = False) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        params = {"type": ["WorkflowStarted", "WorkflowCompleted"]}
        headers = {"Last-Event-ID": position} if header else {}
        if not header:
            params["after"] = [position]
        with browser.stream(
            "GET", "/console/stream", params=params, headers=headers, timeout=WAIT
        ) as answer:
            assert answer.status_code == 200
            until = time.monotonic() + WAIT  # heartbeats come every 0.2 s: the loop turns
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    if seen[-1]["type"] == "WorkflowCompleted":
                        return seen
                if time.monotonic() > until:
                    return seen
        return seen

    for header in (False, True):  # a reconnecting page sends its last position as a header
        seen = events_after(str(read_at), header=header)
        assert [event["type"] for event in seen] == ["WorkflowStarted", "WorkflowCompleted"]
        assert {event["workflow_id"] for event in seen} == {created["workflow_id"]}
    head = max(event["position"] for event in seen)
    for wrong in ("-1", "x", str(head + 1000)):
        refused = browser.get("/console/stream", params={"after": wrong})
        assert refused.status_code == 400, (wrong, refused.text)
        assert "after" in refused.text


def test_logging_out_needs_the_pages_csrf_token(browser: httpx.Client) -> None:
    log_in(browser)
    page = browser.get("/console/workflows").text
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None
    refused = browser.post("/console/logout", data={"csrf": "forged"})
    assert refused.status_code == 403
    assert browser.get("/console/workflows").status_code == 200  # still in
    out = browser.post("/console/logout", data={"csrf": match.group(1)})
    assert out.status_code == 303
    assert "metallica_console=" in out.headers["set-cookie"]
    assert browser.get("/console/workflows").status_code == 303


def test_replaying_and_rewinding_a_group_need_the_csrf_token_and_are_logged_with_the_reader(
    browser: httpx.Client, url: str, stack: LocalStack
) -> None:
    create(url, "gwen")
    with ProtoolsClient(url, AUDITOR) as auditor:
        assert auditor.create_group("audit", start="start", max_deliver=1, ack_wait=1).is_success
        pulled = auditor.pull("audit", "m1", batch=10).json()["messages"]
        assert len(pulled) == 4  # gwen's workflow, never acked: parked once its lease ends

        def parked() -> int:
            group: dict[str, Any] = auditor.group("audit").json()
            return int(group["parked"])

        assert eventually(lambda: auditor.pull("audit", "m1").is_success and parked() == 4)
        log_in(browser)
        page = browser.get("/console/log").text
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token is not None
        assert 'action="/console/groups/audit/replay"' in page

        forged = browser.post("/console/groups/audit/replay", data={"csrf": "x"})
        assert forged.status_code == 403
        assert parked() == 4
        replayed = browser.post("/console/groups/audit/replay", data={"csrf": token.group(1)})
        assert replayed.status_code == 303
        assert parked() == 0
        shown = browser.get(replayed.headers["location"]).text
        assert "4 parked event(s) of audit delivered again" in shown

        rewound = browser.post(
            "/console/groups/audit/rewind", data={"csrf": token.group(1), "to": "start"}
        )
        assert rewound.status_code == 303
        assert auditor.group("audit").json()["position"] == 0
        unknown = browser.post("/console/groups/nope/replay", data={"csrf": token.group(1)})
        assert unknown.status_code == 400
        assert "no consumer group named" in unknown.text

    logged = stack.members["protools"][0].log_path.read_text()
    actions = [json.loads(line) for line in logged.splitlines() if "console_action" in line]
    assert [(a["reader"], a["action"], a["group"]) for a in actions] == [
        ("auditor", "replay", "audit"),
        ("auditor", "rewind", "audit"),
    ]
    assert AUDITOR not in logged
