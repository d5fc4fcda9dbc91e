"""The console as a person sees it: a real Chromium (Debian's, headless, driven by Selenium)
against a real stack. The list updates by itself, a workflow's page follows it while it runs,
the timeline puts each attempt on the replica it went to with its outcome, the log streams, a
wrong token gets the login page again, and no password is in any page or any answer the browser
received.

Screenshots of each view go to ``$CONSOLE_SCREENSHOTS`` when it is set (the README's
come from there: ``docs/console``), else to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from metallica.client import ProtoolsClient
from metallica.stack import LocalStack
from tests.integration.conftest import Observed, StackFactory
from tests.integration.test_console import ALICE, AUDITOR, CLIENTS

# One backend is enough here: what the browser sees does not depend on it (the console's
# storage is tried on both in test_console.py).
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["sqlite"])]

WAIT = 20.0
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def stack(stack_factory: StackFactory) -> LocalStack:
    return stack_factory(replicas=2, **CLIENTS)


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    chosen = os.environ.get("CONSOLE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.fail(
            "Chromium and its driver are needed (Debian: apt-get install chromium "
            "chromium-driver; ./scripts/test installs them when run as root)"
        )
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root, in a container
        "--disable-dev-shm-usage",
        "--window-size=1280,1300",
        "--force-prefers-reduced-motion",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """``condition``'s first true value, tried again while the page replaces what it read (a
    fragment swapped in) or lacks it yet."""
    waiting = WebDriverWait(
        driver,
        WAIT,
        poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )
    return waiting.until(condition, message=what)


def log_in(driver: WebDriver, url: str, token: str) -> None:
    driver.get(url + "/console/login")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()


def fault(stack: LocalStack, replica: int, **fault: Any) -> None:
    armed = httpx.post(
        stack.urls("generator")[replica] + "/v1/faults",
        json=fault,
        headers={"Authorization": f"Bearer {stack.service_token}"},
    )
    assert armed.status_code == 201, armed.text


def bodies_received(driver: webdriver.Chrome) -> list[tuple[str, str]]:
    """The URL and body of every answer the browser received since the last call (streams,
    whose bodies the browser does not keep, are left out: test_console.py checks theirs)."""
    received = []
    for entry in driver.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message["method"] != "Network.responseReceived":
            continue
        response = message["params"]["response"]
        if "text/event-stream" in response.get("mimeType", ""):
            continue
        try:
            body = driver.execute_cdp_cmd(
                "Network.getResponseBody", {"requestId": message["params"]["requestId"]}
            )
        except WebDriverException:
            continue  # a redirect, or an answer the browser let go of: nothing to read
        received.append((response["url"], body.get("body", "")))
    return received


def test_the_console_in_a_real_browser(
    stack: LocalStack, browser: webdriver.Chrome, screenshots: Path
) -> None:
    url = stack.urls("protools")[0]
    generators = stack.urls("generator")
    passwords: list[str] = []
    alice = ProtoolsClient(url, ALICE)
    try:
        _the_tour(stack, browser, screenshots, url, generators, passwords, alice)
    finally:
        alice.close()


def _the_tour(
    stack: LocalStack,
    browser: webdriver.Chrome,
    screenshots: Path,
    url: str,
    generators: list[str],
    passwords: list[str],
    alice: ProtoolsClient,
) -> None:

    def nothing_secret_shown() -> None:
        for password in passwords:
            assert password not in browser.page_source, browser.current_url

    def create(username: str, wait: float = 15) -> dict[str, Any]:
        answer = alice.create_password(username, wait=wait)
        assert answer.status_code in (200, 202), answer.text
        body: dict[str, Any] = answer.json()
        return body

    # No session: the login page; a token that may not read the whole log: the login page again.
    browser.get(url + "/console/workflows")
    until(browser, lambda d: d.current_url.endswith("/console/login"), "the login page")
    log_in(browser, url, ALICE)
    error = until(browser, lambda d: d.find_element(By.ID, "login-error"), "a refusal")
    assert "cannot open the console" in error.text
    browser.save_screenshot(str(screenshots / "login.png"))
    log_in(browser, url, AUDITOR)
    until(browser, lambda d: d.current_url.endswith("/console/workflows"), "the workflows")
    assert "mallory" not in browser.page_source

    # The list updates by itself.
    first = create("mallory")
    passwords.append(first["password"])
    selector = f'tr[data-workflow="{first["workflow_id"]}"]'
    until(
        browser,
        lambda d: "completed" in d.find_element(By.CSS_SELECTOR, selector).text,
        "the new row, completed, without a reload",
    )
    nothing_secret_shown()

    # The keyboard: "/" goes to the search field; a row's link keeps the focus while the list
    # refreshes around it (a new workflow comes in at the top).
    ActionChains(browser).send_keys("/").perform()
    assert browser.switch_to.active_element.get_attribute("id") == "q"
    link = f"open-{first['workflow_id']}"
    for _ in range(10):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.switch_to.active_element.get_attribute("id") == link:
            break
    assert browser.switch_to.active_element.get_attribute("id") == link
    later = create("paula")
    passwords.append(later["password"])
    until(
        browser,
        lambda d: (
            "completed"
            in d.find_element(By.CSS_SELECTOR, f'tr[data-workflow="{later["workflow_id"]}"]').text
        ),
        "the next row, without a reload",
    )
    assert browser.switch_to.active_element.get_attribute("id") == link

    # A workflow through a fault: the first generator replica drops its answer after storing
    # the password (in doubt, "reset"), the retry asks the other one with the same key. While
    # it runs, its page follows it live.
    fault(stack, 0, point="after_persist", action="drop", attempt=1)
    fault(stack, 1, point="after_persist", action="drop", attempt=1)
    fault(stack, 0, point="before_persist", action="delay", delay_ms=800, attempt=2)
    fault(stack, 1, point="before_persist", action="delay", delay_ms=800, attempt=2)
    accepted = create("nadia", wait=0)
    workflow_id = accepted["workflow_id"]
    browser.get(f"{url}/console/workflows/{workflow_id}")
    until(
        browser,
        lambda d: d.find_element(By.ID, "workflow-status").text == "completed",
        "the workflow's page to show it completed, without a reload",
    )
    with ProtoolsClient(url, ALICE) as again:
        done = again.workflow(workflow_id).json()
        events = again.events(workflow_id).json()["events"]
    passwords.append(done["password"])
    attempts = [e["data"] for e in events if e["type"] in ("StepAttemptFailed", "StepSucceeded")]
    dropped = next(a for a in attempts if a["step"] == "generate_password")
    assert dropped["reason"] == "reset"
    bars = {
        bar.get_attribute("aria-label")
        for bar in browser.find_elements(By.CSS_SELECTOR, "#timeline g.attempt")
    }
    expected = {
        f"{a['step']} attempt {a['attempt']} to {a['replica']}: "
        + ("succeeded" if "result" in a else "failed in doubt (reset)")
        for a in attempts
    }
    assert {label.rsplit(" after ", 1)[0] for label in bars if label} == expected
    assert {a["replica"] for a in attempts if a["step"] == "generate_password"} <= set(generators)
    in_doubt = browser.find_elements(By.CSS_SELECTOR, "#timeline g.attempt.failed-in-doubt")
    assert len(in_doubt) == 1
    # The backoff before the retry is drawn when there was one (its jittered delay may be 0).
    backoffs = browser.find_elements(By.CSS_SELECTOR, "#timeline line.backoff")
    assert len(backoffs) == (1 if dropped["retry_in"] else 0), (dropped, browser.page_source)
    browser.save_screenshot(str(screenshots / "workflow.png"))
    nothing_secret_shown()

    browser.get(url + "/console/workflows")
    until(browser, lambda d: workflow_id in d.page_source, "the list")
    browser.save_screenshot(str(screenshots / "workflows.png"))
    nothing_secret_shown()

    # The log streams.
    browser.get(url + "/console/log")
    until(browser, lambda d: d.execute_script("return document.body.dataset.live") == "connected",
          "the log's stream")  # fmt: skip
    streamed = create("oscar")
    passwords.append(streamed["password"])
    until(
        browser,
        lambda d: streamed["workflow_id"] in d.find_element(By.ID, "log-rows").text,
        "the new events in the log",
    )
    until(
        browser,
        lambda d: "WorkflowCompleted" in d.find_element(By.ID, "log-rows").text,
        "the workflow's end in the log",
    )
    browser.save_screenshot(str(screenshots / "log.png"))
    nothing_secret_shown()

    browser.get(url + "/console/health")
    until(browser, lambda d: d.find_element(By.ID, "readiness").text == "ready", "readiness")
    browser.save_screenshot(str(screenshots / "health.png"))

    # No password anywhere: not in the last page's DOM, not in any answer the browser got.
    received = bodies_received(browser)
    assert received, "the browser's network log is empty"
    assert all(answer_url.startswith(url + "/console") for answer_url, _ in received)
    nothing_secret_shown()
    for password in passwords:
        for answer_url, body in received:
            assert password not in body, f"the password is in {answer_url}"


def test_a_workflow_through_a_timeout_a_killed_replica_and_a_park(
    stack_factory: StackFactory, browser: webdriver.Chrome, screenshots: Path
) -> None:
    """What an operator sees of an incident: the first generator replica stores the password
    and answers too late (a timeout, in doubt), the second was killed (refused), the circuit
    opens and the step parks, the replica comes back, and the retry with the same key gets the
    password stored by the call that timed out. The workflow's page draws each of these; the
    health page shows the dead replica while it is down."""
    stack = stack_factory(
        replicas=2,
        **CLIENTS,
        METALLICA_CALL_TIMEOUT="1",
        METALLICA_BREAKER_FAILURES="2",
        METALLICA_BREAKER_OPEN_SECONDS="1",
    )
    stack.stop_replica("protools", 1)  # one relay: one breaker sees every failure
    url = stack.urls("protools")[0]
    generators = stack.urls("generator")
    # Its first call stores the password and answers after 2.5 s: the call gives up at 1 s.
    fault(stack, 0, point="after_persist", action="delay", delay_ms=2500)
    stack.kill("generator", 1)  # SIGKILL; down until started again (this stack is not supervised)
    log_in(browser, url, AUDITOR)
    until(browser, lambda d: d.current_url.endswith("/console/workflows"), "the workflows")
    with ProtoolsClient(url, ALICE) as alice:
        accepted = alice.create_password("quentin", wait=0)
        assert accepted.status_code in (200, 202), accepted.text
        workflow_id = accepted.json()["workflow_id"]
        page = f"{url}/console/workflows/{workflow_id}"
        browser.get(page)
        park = until(
            browser,
            lambda d: d.find_element(By.CSS_SELECTOR, "#timeline rect.parked"),
            "a park on the timeline, without a reload",
        )
        assert "parked: circuit-open" in (park.get_attribute("innerHTML") or "")

        browser.get(url + "/console/health")
        dead = f"{generators[1]}"
        until(
            browser,
            lambda d: any(
                dead in row.text and "not ready" in row.text
                for row in d.find_elements(By.CSS_SELECTOR, "table.readiness tr")
            ),
            "the killed replica, not ready",
        )
        browser.save_screenshot(str(screenshots / "incident-health.png"))
        stack.start_replica("generator", 1)

        browser.get(page)
        until(
            browser,
            lambda d: d.find_element(By.ID, "workflow-status").text == "completed",
            "the workflow completed",
        )
        done = alice.workflow(workflow_id).json()
        events = alice.events(workflow_id).json()["events"]
    password = done["password"]
    observed = Observed(stack)
    assert observed.holds_password("quentin", password)  # the one stored by the timed-out call
    assert observed.password_count() == 1
    assert len(observed.mails()) == 1

    calls = [
        e["data"]
        for e in events
        if e["type"] in ("StepAttemptFailed", "StepSucceeded")
        and e["data"]["step"] == "generate_password"
    ]
    labels = [
        g.get_attribute("aria-label") or ""
        for g in browser.find_elements(By.CSS_SELECTOR, "#timeline g.attempt")
    ]
    generate = [label for label in labels if label.startswith("generate_password ")]
    assert len(generate) == len(calls), labels
    assert any(f"to {generators[0]}: failed in doubt (timeout)" in label for label in generate), (
        generate
    )
    refused = f"to {generators[1]}: failed"  # in doubt too, after the timeout: the step is
    assert any(refused in label and "(connection-refused)" in label for label in generate), generate
    assert f"to {calls[-1]['replica']}: succeeded" in generate[-1]
    parks = browser.find_elements(By.CSS_SELECTOR, "#timeline rect.parked")
    assert parks
    assert all("circuit-open" in (p.get_attribute("innerHTML") or "") for p in parks)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.attempts tr.outcome-parked")
    assert len(rows) == len(parks)
    browser.save_screenshot(str(screenshots / "incident.png"))
    assert password not in browser.page_source
    for answer_url, body in bodies_received(browser):
        assert password not in body, f"the password is in {answer_url}"
