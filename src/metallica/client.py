"""A small client of protools' API, for the CLI and the demo."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

# A replica overloaded, shutting down or behind a proxy that lost it: the stream is tried again.
RETRIED_STATUSES = frozenset({502, 503, 504})


class LogStreamRefused(Exception):
    """protools refused to stream the log (a problem+json: bad input, a token it refuses)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code}: {response.text[:500]}")
        self.response = response


class LogStreamLost(Exception):
    """The log's stream kept breaking: no event came through the reconnections allowed."""


def _log_params(
    after: int, types: Sequence[str], workflow_id: str | None, limit: int | None = None
) -> dict[str, str | int]:
    params: dict[str, str | int] = {}
    if after:
        params["after"] = after
    if limit is not None:
        params["limit"] = limit
    if types:
        params["type"] = ",".join(types)
    if workflow_id:
        params["workflow_id"] = workflow_id
    return params


class ProtoolsClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 40.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def create_password(
        self,
        username: str | None,
        *,
        email: str | None = None,
        key: str | None = None,
        wait: float = 5.0,
    ) -> httpx.Response:
        body: dict[str, Any] = {}
        if username is not None:
            body["username"] = username
        if email is not None:
            body["email"] = email
        return self._http.post(
            "/v1/workflows/password-creation",
            json=body,
            headers={"Idempotency-Key": key or str(uuid.uuid4()), "Prefer": f"wait={wait:g}"},
        )

    def workflow(self, workflow_id: str, *, wait: float = 0) -> httpx.Response:
        return self._http.get(f"/v1/workflows/{workflow_id}", headers={"Prefer": f"wait={wait:g}"})

    def list_workflows(
        self, *, status: str | None = None, limit: int = 20, after: str | None = None
    ) -> httpx.Response:
        params: dict[str, str | int] = {"limit": limit}
        if status:
            params["status"] = status
        if after:
            params["after"] = after
        return self._http.get("/v1/workflows", params=params)

    def events(self, workflow_id: str, *, view: str = "all") -> httpx.Response:
        """The workflow's events; ``view="compact"``: runs of failed attempts summed up."""
        params = {"view": view} if view != "all" else None
        return self._http.get(f"/v1/workflows/{workflow_id}/events", params=params)

    def log(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        types: Sequence[str] = (),
        workflow_id: str | None = None,
    ) -> httpx.Response:
        """A page of the log after position ``after`` (``events``, ``head``, ``next``)."""
        return self._http.get("/v1/events", params=_log_params(after, types, workflow_id, limit))

    def follow_log(
        self,
        *,
        after: int = 0,
        types: Sequence[str] = (),
        workflow_id: str | None = None,
        reconnects: int = 10,
        idle_timeout: float = 60.0,
    ) -> Iterator[dict[str, Any]]:
        """The log's events after ``after``, live, each once and in order, for as long as the
        caller iterates: ``GET /v1/events/stream``, resumed from the last position received
        (``Last-Event-ID``) when the stream ends or breaks, at most ``reconnects`` times in a
        row without an event between. ``idle_timeout``: seconds without a byte (heartbeats
        included) after which the stream counts as broken."""
        last, failures = after, 0
        timeout = httpx.Timeout(10.0, read=idle_timeout)
        while True:
            headers = {"Last-Event-ID": str(last)} if last else {}
            params = _log_params(0, types, workflow_id)
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    "/v1/events/stream",
                    params=params,
                    headers=headers,
                    timeout=timeout,
                ) as source:
                    status = source.response.status_code
                    if status != 200:
                        source.response.read()
                        if status not in RETRIED_STATUSES:
                            raise LogStreamRefused(source.response)
                        raise SSEError(f"the replica answered {status}: trying again")
                    for message in source.iter_sse():
                        if message.event == "end":
                            break  # the replica ended this stream: resume where it left off
                        event: dict[str, Any] = message.json()
                        last, failures = int(event["position"]), 0
                        yield event
                    else:
                        raise SSEError("the stream closed without an end event")
                time.sleep(0.05)  # an end event: a clean hand-off, resumed at once
                continue
            except (httpx.TransportError, SSEError):
                pass
            failures += 1
            if failures > reconnects:
                raise LogStreamLost(f"the stream broke {failures} times in a row at {last}")
            time.sleep(min(5.0, 0.1 * 2**failures))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ProtoolsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain text table with aligned columns."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, ["-" * width for width in widths], *rows]
    ]
    return "\n".join(lines)


def history_table(events: list[dict[str, Any]]) -> str:
    """A workflow's events as a table: version, time since start, type, what happened."""
    import datetime

    def seconds(event: dict[str, Any]) -> float:
        return datetime.datetime.fromisoformat(event["time"]).timestamp()

    start = seconds(events[0]) if events else 0.0

    def versions(event: dict[str, Any]) -> str:
        last = event["data"].get("last_version") if event["type"] == "StepAttemptsFailed" else None
        return f"{event['version']}-{last}" if last is not None else str(event["version"])

    rows = [
        [versions(e), e["time"], f"+{seconds(e) - start:.3f}s", e["type"], describe_event(e)]
        for e in events
    ]
    return format_table(["v", "time", "since start", "event", "what happened"], rows)


def describe_event(event: dict[str, Any]) -> str:
    """One line saying what an event means."""
    data = event["data"]
    kind = event["type"]
    if kind == "WorkflowStarted":
        given = data["input"]
        return f"{data['workflow']} for {given['username']!r}, mail to {given['recipient']}"
    if kind == "StepSucceeded":
        return (
            f"{data['step']} attempt {data['attempt']} ok via {data['replica']} "
            f"in {data['elapsed_ms']:.0f} ms"
        )
    if kind == "StepAttemptFailed":
        doubt = ", in doubt" if data.get("in_doubt") else ""
        following = data.get("next_replica")
        failover = (
            f", failover to {following}" if following and following != data["replica"] else ""
        )
        return (
            f"{data['step']} attempt {data['attempt']} failed via {data['replica']} after "
            f"{data['elapsed_ms']:.0f} ms: {data['reason']}{doubt}; "
            f"retry in {data['retry_in']:.2f} s{failover}"
        )
    if kind == "StepAttemptsFailed":  # a run of failures, in the compact view
        import datetime

        doubt = ", in doubt" if data.get("in_doubt") else ""
        causes = ", ".join(
            f"{cause['reason']} x{cause['count']} ({cause['last_detail']})"
            for cause in data["causes"]
        )
        parked = ", ".join(f"{park['reason']} x{park['count']}" for park in data.get("parked", []))
        retry = data.get("retry_in")
        first, last = map(datetime.datetime.fromisoformat, (event["time"], data["last_time"]))
        return (
            f"{data['step']} attempts {data['first_attempt']}-{data['last_attempt']} failed "
            f"{data['count']} times over {(last - first).total_seconds():.1f} s: {causes}{doubt}"
            + (f"; parked: {parked}" if parked else "")
            + (f"; retry in {retry:.2f} s" if retry is not None else "")
        )
    if kind == "WorkflowFailed":
        error = data.get("error") or {}
        return f"failed at {data.get('step')}: {error.get('title')} ({error.get('detail')})"
    if kind == "WorkflowCompleted":
        return "completed"
    return ""
