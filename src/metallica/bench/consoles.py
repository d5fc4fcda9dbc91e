"""Web consoles following the live log while the bench runs (``metallica bench --consoles N``):
what an operator's open console costs the hot path.

Each console logs in once, as a browser does (the bench's token, a log reader's), then follows
``/console/stream`` in a thread of its own, counting the events it receives and reconnecting
when a stream ends (they rotate), until the bench is done.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

STOP_TIMEOUT = 30.0  # past a heartbeat (15 s by default): a reader checks at each line


@dataclass
class Consoles:
    """The consoles' counts of events received (one entry per console)."""

    received: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@contextlib.contextmanager
def following_consoles(
    url: str, token: str, count: int, say: Callable[[str], None]
) -> Iterator[Consoles]:
    """``count`` consoles following ``url``'s live log until the block ends."""
    consoles = Consoles(received=[0] * count)
    if count <= 0:
        yield consoles
        return
    stop = threading.Event()
    timeout = httpx.Timeout(10.0, read=30.0)
    clients = [httpx.Client(base_url=url, timeout=timeout) for _ in range(count)]
    for client in clients:
        login = client.post("/console/login", data={"token": token})
        if login.status_code != 303:
            for each in clients:
                each.close()
            raise RuntimeError(
                f"a console could not log in ({login.status_code}): the token must be a log "
                "reader's (METALLICA_LOG_READERS)"
            )

    opened = [threading.Event() for _ in range(count)]

    def follow(index: int, client: httpx.Client) -> None:
        while not stop.is_set():
            try:
                with client.stream("GET", "/console/stream") as answer:
                    opened[index].set()  # from here on, nothing recorded is missed
                    for line in answer.iter_lines():
                        if line.startswith("data:"):
                            consoles.received[index] += 1
                        if stop.is_set():
                            return
            except httpx.HTTPError as error:
                if not stop.is_set():
                    consoles.failures.append(f"console {index}: {type(error).__name__}")
                    stop.wait(0.5)

    threads = [
        threading.Thread(target=follow, args=(index, client), name=f"console-{index}", daemon=True)
        for index, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        for index, event in enumerate(opened):
            if not event.wait(STOP_TIMEOUT):
                raise RuntimeError(f"console {index} could not open the live log")
        say(f"{count} consoles following the live log")
        yield consoles
    finally:
        stop.set()
        for client in clients:
            client.close()  # a read under way ends at once
        for thread in threads:
            thread.join(STOP_TIMEOUT)
        left = [thread.name for thread in threads if thread.is_alive()]
        if left:
            raise RuntimeError(f"consoles still reading {STOP_TIMEOUT:g} s after stop: {left}")
