"""The log's followers restarted while the log grows: 3 writers on 3 protools replicas; a
follower process killed and started again 3 times, each time on another replica, resuming
after the last position it printed; a consumer group whose members crash (their last batch
never acked) and start again under the same names. Judged against the store by the
followers' checker: the stream every event once, in order; the group every event, each
workflow's in order."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from metallica.client import Consumer, ProtoolsClient
from metallica.load.follow_check import Seen, check_follow
from metallica.stack import LocalStack
from tests.integration.conftest import StackFactory
from tests.waiting import eventually

pytestmark = pytest.mark.slow

WRITER, READER = "writer-token-0123456789", "reader-token-0123456789"
CLIENTS = {
    "METALLICA_CLIENT_TOKENS": f"writer:{WRITER},reader:{READER}",
    "METALLICA_LOG_READERS": "reader",
    "METALLICA_LOG_POLL_INTERVAL": "0.2",
}
WORKFLOWS_PER_WRITER = 8
RESTARTS = 3
WAIT = 60.0
FOLLOWER = """
import json, sys
from metallica.client import ProtoolsClient
url, token, after = sys.argv[1], sys.argv[2], int(sys.argv[3])
with ProtoolsClient(url, token) as client:
    for event in client.follow_log(after=after, reconnects=50):
        fields = ("position", "workflow_id", "version")
        print(json.dumps({name: event[name] for name in fields}), flush=True)
"""


@pytest.fixture
def stack(stack_factory: StackFactory) -> LocalStack:
    return stack_factory(replicas=3, **CLIENTS)


class FollowerProcess:
    """``FOLLOWER`` in a process of its own, its lines read by a thread."""

    def __init__(self, url: str, after: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", FOLLOWER, url, READER, str(after)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.received: list[Seen] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = json.loads(line)
            self.received.append(Seen(event["position"], event["workflow_id"], event["version"]))

    def kill(self) -> list[Seen]:
        """SIGKILL it; everything it printed before it died."""
        self.process.kill()
        self.process.wait(timeout=WAIT)
        self._reader.join(WAIT)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.received


def stored(client: ProtoolsClient) -> list[Seen]:
    events: list[Seen] = []
    after = 0
    while True:
        page = client.log(after=after, limit=1000).json()
        events += [Seen(e["position"], e["workflow_id"], e["version"]) for e in page["events"]]
        if page["next"] >= page["head"]:
            return events
        after = page["next"]


@pytest.fixture
def reader(stack: LocalStack) -> Iterator[ProtoolsClient]:
    with ProtoolsClient(stack.urls("protools")[0], READER) as client:
        yield client


def test_restarted_followers_miss_nothing_while_three_replicas_write(
    stack: LocalStack, reader: ProtoolsClient
) -> None:
    urls = stack.urls("protools")
    assert reader.create_group("restarts", start="start", ack_wait=1.0).status_code == 201

    def write(index: int) -> None:
        with ProtoolsClient(urls[index], WRITER) as client:
            for n in range(WORKFLOWS_PER_WRITER):
                answer = client.create_password(f"w{index}n{n}", wait=10)
                assert answer.status_code == 200, answer.text

    writers = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for thread in writers:
        thread.start()

    # The stream's follower: killed and started again RESTARTS times, each on the next replica,
    # after the last position it printed.
    streamed: list[Seen] = []
    follower = FollowerProcess(urls[0], 0)

    def printed_or_idle(current: FollowerProcess) -> bool:
        """It printed something, or the writers are done (then a restart all the same)."""
        return bool(current.received) or not any(thread.is_alive() for thread in writers)

    for restart in range(1, RESTARTS + 1):
        current = follower
        assert eventually(lambda: printed_or_idle(current), WAIT)  # noqa: B023 (called here)
        streamed += current.kill()
        follower = FollowerProcess(urls[restart % 3], streamed[-1].position if streamed else 0)

    # The group's members: each pulls a batch, and the first time, crashes without acking it;
    # then it starts again under the same name and acks what it is handed.
    pulled: list[Seen] = []
    lock = threading.Lock()
    done = threading.Event()

    def consume(index: int) -> None:
        for life in range(2):
            with ProtoolsClient(urls[index], READER) as client:
                member = Consumer(client, "restarts", f"member-{index}", batch=5, wait=0.5)
                while not done.is_set():
                    batch = member.pull()
                    with lock:
                        pulled.extend(
                            Seen(m["position"], m["workflow_id"], m["version"]) for m in batch
                        )
                    if batch and life == 0:
                        break  # a crash: this batch is never acked
                    if batch:
                        member.ack(*batch)

    members = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for thread in members:
        thread.start()
    for thread in writers:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in writers)

    log = stored(reader)
    wanted = {event.position for event in log}
    assert len(log) >= 3 * WORKFLOWS_PER_WRITER * 4
    try:
        assert eventually(
            lambda: wanted <= {e.position for e in streamed + follower.received}, WAIT
        ), "the last follower did not catch up"
        assert eventually(lambda: wanted <= {e.position for e in list(pulled)}, WAIT)
        # ... and acked: the crashed batches came again, to a member that lived.
        assert eventually(lambda: reader.group("restarts").json()["unfinished"] == 0, WAIT)
    finally:
        streamed += follower.kill()
        done.set()
        for thread in members:
            thread.join(WAIT)
    assert not any(thread.is_alive() for thread in members)

    stream = check_follow("the stream", log, streamed, in_log_order=True)
    assert stream.ok, str(stream)
    group = check_follow("the group", log, pulled, in_log_order=False, duplicates_allowed=True)
    assert group.ok, str(group)
    assert group.duplicated, "the crashed members' batches came again"
    details: dict[str, Any] = reader.group("restarts").json()
    assert details["unfinished"] == 0
    assert details["redeliveries"] >= len(group.duplicated)
