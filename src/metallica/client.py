"""A small client of protools' API, for the CLI and the demo."""

from __future__ import annotations

import contextlib
import socket
import threading
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
        # The sockets of the log's streams being read, so that close() can wake their reader.
        self._streams: set[socket.socket] = set()
        self._streams_lock = threading.Lock()
        self._closed = threading.Event()

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
        while not self._closed.is_set():
            headers = {"Last-Event-ID": str(last)} if last else {}
            params = _log_params(0, types, workflow_id)
            try:
                with (
                    connect_sse(
                        self._http,
                        "GET",
                        "/v1/events/stream",
                        params=params,
                        headers=headers,
                        timeout=timeout,
                    ) as source,
                    self._interruptible(source.response),
                ):
                    status = source.response.status_code
                    if status != 200:
                        source.response.read()
                        if status not in RETRIED_STATUSES:
                            raise LogStreamRefused(source.response)
                        raise SSEError(f"the replica answered {status}: trying again")
                    for message in source.iter_sse():
                        if not message.data:
                            # A heartbeat (a comment): httpx-sse hands it on as a message with
                            # no data once an id was seen; the SSE spec dispatches nothing.
                            continue
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
                if self._closed.is_set():
                    return  # close() ended the stream under way
            except RuntimeError:  # httpx: "the client has been closed"
                if self._closed.is_set():
                    return
                raise
            failures += 1
            if failures > reconnects:
                raise LogStreamLost(f"the stream broke {failures} times in a row at {last}")
            self._closed.wait(min(5.0, 0.1 * 2**failures))

    # --- consumer groups (durable subscriptions) ----------------------------------------------

    def create_group(
        self, name: str, *, start: str | int = "end", **settings: Any
    ) -> httpx.Response:
        """Create a consumer group (201), or find the same one (200); ``settings``: ``types``,
        ``ack_wait``, ``max_deliver``, ``max_ack_pending``."""
        return self._http.post("/v1/subscriptions", json={"name": name, "start": start, **settings})

    def groups(self) -> httpx.Response:
        return self._http.get("/v1/subscriptions")

    def group(self, name: str) -> httpx.Response:
        return self._http.get(f"/v1/subscriptions/{name}")

    def delete_group(self, name: str) -> httpx.Response:
        return self._http.delete(f"/v1/subscriptions/{name}")

    def pull(self, name: str, member: str, *, batch: int = 10, wait: float = 0) -> httpx.Response:
        body = {"member": member, "batch": batch, "wait": wait}
        timeout = httpx.Timeout(10.0, read=wait + 30.0)
        return self._http.post(f"/v1/subscriptions/{name}/pull", json=body, timeout=timeout)

    def ack(self, name: str, member: str, positions: Sequence[int]) -> httpx.Response:
        body = {"member": member, "positions": list(positions)}
        return self._http.post(f"/v1/subscriptions/{name}/ack", json=body)

    def nack(
        self, name: str, member: str, positions: Sequence[int], *, delay: float | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"member": member, "positions": list(positions)}
        if delay is not None:
            body["delay"] = delay
        return self._http.post(f"/v1/subscriptions/{name}/nack", json=body)

    def extend(self, name: str, member: str, positions: Sequence[int]) -> httpx.Response:
        body = {"member": member, "positions": list(positions)}
        return self._http.post(f"/v1/subscriptions/{name}/extend", json=body)

    def rewind(self, name: str, to: str | int) -> httpx.Response:
        return self._http.post(f"/v1/subscriptions/{name}/rewind", json={"to": to})

    def parked(self, name: str, *, after: int = 0, limit: int = 100) -> httpx.Response:
        params = {"after": after, "limit": limit}
        return self._http.get(f"/v1/subscriptions/{name}/parked", params=params)

    def replay(self, name: str, positions: Sequence[int] | None = None) -> httpx.Response:
        body = {} if positions is None else {"positions": list(positions)}
        return self._http.post(f"/v1/subscriptions/{name}/replay", json=body)

    def consumer(self, group: str, member: str, **options: Any) -> Consumer:
        """A member of ``group`` (see :class:`Consumer`)."""
        return Consumer(self, group, member, **options)

    @contextlib.contextmanager
    def _interruptible(self, response: httpx.Response) -> Iterator[None]:
        """While a stream is read, its socket is known to :meth:`close`: closing a socket does
        not wake a thread blocked reading it (it would wait for the next heartbeat, up to 15 s);
        shutting it down does."""
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            yield
            return
        with self._streams_lock:
            self._streams.add(sock)
        try:
            yield
        finally:
            with self._streams_lock:
                self._streams.discard(sock)

    def close(self) -> None:
        """Closes the client; a :meth:`follow_log` under way in another thread ends at once."""
        self._closed.set()
        with self._streams_lock:
            streams = list(self._streams)
        for sock in streams:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._http.close()

    def __enter__(self) -> ProtoolsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class SubscriptionRefused(Exception):
    """protools refused a consumer group's request (a problem+json: an unknown group, events
    not leased to this member, a token that may not read the whole log)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code}: {response.text[:500]}")
        self.response = response


class Consumer:
    """A member of a consumer group: iterate to receive the group's events, ``ack`` each once
    handled. Delivery is at least once (an event not acked within the group's ``ack_wait`` goes
    to a member again), in order per workflow; a member that stops and starts again under the
    same name, or another, resumes where the group is: protools keeps its progress.

    A replica that is down, overloaded or behind a broken proxy is asked again, with backoff,
    up to ``reconnects`` times in a row; a refusal (4xx) raises :class:`SubscriptionRefused`.
    """

    def __init__(
        self,
        client: ProtoolsClient,
        group: str,
        member: str,
        *,
        batch: int = 10,
        wait: float = 5.0,
        reconnects: int = 10,
    ) -> None:
        self.client, self.group, self.member = client, group, member
        self.batch, self.wait, self.reconnects = batch, wait, reconnects

    def _call(self, send: Any, *args: Any, **kwargs: Any) -> httpx.Response:
        failures = 0
        while True:
            response: httpx.Response | None = None
            with contextlib.suppress(httpx.TransportError):
                response = send(self.group, self.member, *args, **kwargs)
            if response is not None and response.status_code not in RETRIED_STATUSES:
                if response.is_error:
                    raise SubscriptionRefused(response)
                return response
            failures += 1
            if failures > self.reconnects:
                if response is not None:
                    raise SubscriptionRefused(response)
                raise LogStreamLost(f"protools did not answer {failures} times in a row")
            time.sleep(min(5.0, 0.1 * 2**failures))

    def pull(self) -> list[dict[str, Any]]:
        """One batch (empty when nothing came within ``wait``)."""
        answer = self._call(self.client.pull, batch=self.batch, wait=self.wait)
        messages: list[dict[str, Any]] = answer.json()["messages"]
        return messages

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield from self.pull()

    def ack(self, *messages: dict[str, Any]) -> None:
        self._call(self.client.ack, [message["position"] for message in messages])

    def nack(self, *messages: dict[str, Any], delay: float | None = None) -> None:
        self._call(self.client.nack, [message["position"] for message in messages], delay=delay)

    def extend(self, *messages: dict[str, Any]) -> None:
        self._call(self.client.extend, [message["position"] for message in messages])


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
