"""Followers of protools' log attached to a lab for all of its run: one follower of the stream
(``GET /v1/events/stream``, resumed with ``Last-Event-ID`` whenever it breaks) and a consumer
group of three members, each pulling from a replica of its own. After each scenario, once
they have caught up with the head, :func:`metallica.load.follow_check.check_follow` judges what
each received against what the store holds (``run_scenario`` adds it to every scenario's
checks): through replica kills, database restarts and faults, on local processes and on
the Compose stack, the stream must have given every event once, in order; the group every
event at least once, each workflow's in order."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import httpx

from metallica.client import Consumer, LogStreamLost, ProtoolsClient
from metallica.load.follow_check import FollowReport, Seen, check_follow
from metallica.protools import store
from metallica.storage import open_database

GROUP = "lab-followers"
MEMBERS = 3
# Short leases: an event whose pull answer a killed replica never sent comes back soon.
ACK_WAIT = 3.0
# A follower asks its replica again this many times in a row (about 6 s with the client's
# backoff), then looks up where the replicas answer now (a Compose container restarted has new
# ports) and goes on from where it was; it gives up after OUTAGES such look-ups in a row.
RECONNECTS = 4
OUTAGES = 60
CATCH_UP_SECONDS = 60.0
STOP_SECONDS = 15.0


class ReplicasUnknown(Exception):
    """Where protools' replicas answer could not be read (a container between two lives)."""


class LogFollowers:
    """The stream's follower and the group's members, each a thread, recording what they get.

    ``urls`` says where protools' replicas answer now: a lab of local processes gives the same
    list every time; a Compose lab reads the containers' published ports again."""

    def __init__(self, urls: Callable[[], Sequence[str]], token: str, database_url: str) -> None:
        self.urls, self.token, self.database_url = urls, token, database_url
        self.streamed: list[Seen] = []
        self.pulled: list[Seen] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._clients: set[ProtoolsClient] = set()
        self._threads: list[threading.Thread] = []

    @contextlib.contextmanager
    def _client(self, index: int) -> Iterator[ProtoolsClient]:
        """A client of replica ``index`` as it answers now, closed at the end (or by stop())."""
        urls = self.urls()
        client = ProtoolsClient(urls[index % len(urls)], self.token, timeout=10)
        with self._lock:
            self._clients.add(client)
        if self._stopping.is_set():
            client.close()  # stop() ran meanwhile: the follower ends at its first request
        try:
            yield client
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()

    def start(self) -> None:
        with self._client(0) as client:
            created = client.create_group(GROUP, start="start", ack_wait=ACK_WAIT)
        if created.status_code not in (200, 201):
            raise RuntimeError(f"the followers' group was refused: {created.text[:300]}")
        self._spawn("log-stream-follower", self._follow)
        for index in range(MEMBERS):
            self._spawn(f"group-member-{index}", self._consume, index)

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        def run() -> None:
            try:
                target(*args)
            except Exception as error:
                if not self._stopping.is_set():  # a closed client ends a follower at the end
                    with self._lock:
                        self.errors.append(f"{name}: {type(error).__name__}: {error}")

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _ride_outages(
        self, index: int, follow: Callable[[ProtoolsClient, Callable[[], None]], None]
    ) -> None:
        """``follow`` on a client of replica ``index``, on a new one (where the replica answers
        now) each time it loses its replica, until stop(), or :data:`OUTAGES` losses in a row
        with no progress between (``follow`` calls its second argument when it makes some)."""
        outages = [0]

        def progressed() -> None:
            outages[0] = 0

        while not self._stopping.is_set():
            try:
                with self._client(index) as client:
                    follow(client, progressed)
            except (LogStreamLost, httpx.TransportError, ReplicasUnknown) as error:
                outages[0] += 1
                if outages[0] > OUTAGES:
                    raise RuntimeError(f"{OUTAGES} outages in a row, the last: {error}") from error
                self._stopping.wait(1.0)

    def _follow(self) -> None:
        last = [0]

        def follow(client: ProtoolsClient, progressed: Callable[[], None]) -> None:
            for event in client.follow_log(after=last[0], reconnects=RECONNECTS, idle_timeout=30):
                with self._lock:
                    self.streamed.append(_seen(event))
                last[0] = event["position"]
                progressed()
                if self._stopping.is_set():
                    return

        self._ride_outages(0, follow)

    def _consume(self, index: int) -> None:
        def consume(client: ProtoolsClient, progressed: Callable[[], None]) -> None:
            member = Consumer(
                client, GROUP, f"member-{index}", batch=20, wait=1, reconnects=RECONNECTS
            )
            while not self._stopping.is_set():
                batch = member.pull()
                progressed()
                with self._lock:
                    self.pulled.extend(_seen(message) for message in batch)
                if batch:
                    member.ack(*batch)

        self._ride_outages(index, consume)

    def stored(self) -> list[Seen]:
        database = open_database(self.database_url, "protools", pool_size=1)
        try:
            with database.transaction(write=False) as tx:
                logged = store.read_log(tx, after=0, limit=10**7)
        finally:
            database.close()
        return [Seen(e.event.global_position, e.event.stream_id, e.event.version) for e in logged]

    def reports(self) -> tuple[FollowReport, FollowReport]:
        """Once both have received everything stored (or after :data:`CATCH_UP_SECONDS`): the
        stream's report (exactly once, in order) and the group's (at least once)."""
        stored = self.stored()
        wanted = {event.position for event in stored}
        until = time.monotonic() + CATCH_UP_SECONDS
        while time.monotonic() < until and not self.errors:
            with self._lock:
                streamed = {event.position for event in self.streamed}
                pulled = {event.position for event in self.pulled}
            if wanted <= streamed and wanted <= pulled:
                break
            time.sleep(0.1)
        with self._lock:
            streamed_list, pulled_list = list(self.streamed), list(self.pulled)
        stream = check_follow("the stream", stored, streamed_list, in_log_order=True)
        group = check_follow(
            f"the group ({MEMBERS} members)",
            stored,
            pulled_list,
            in_log_order=False,
            duplicates_allowed=True,
        )
        return stream, group

    def verdict(self) -> tuple[bool, str]:
        """Whether both followers saw every event as promised, and what each received."""
        stream, group = self.reports()
        ok = stream.ok and group.ok and not self.errors
        detail = f"{stream}; {group}"
        if group.duplicated:
            detail += f" ({len(group.duplicated)} delivered again: at least once)"
        if self.errors:
            detail += "; " + "; ".join(self.errors)
        return ok, detail

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()  # ends a stream or a pull under way
        until = time.monotonic() + STOP_SECONDS
        for thread in self._threads:
            thread.join(max(0.0, until - time.monotonic()))
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        if alive:
            raise RuntimeError(f"followers still running {STOP_SECONDS:g} s after stop: {alive}")


def _seen(event: dict[str, object]) -> Seen:
    position, version = event["position"], event["version"]
    assert isinstance(position, int)
    assert isinstance(version, int)
    return Seen(position, str(event["workflow_id"]), version)
