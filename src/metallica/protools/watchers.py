"""Whoever waits on a workflow here (the creating request, a GET with ``Prefer: wait``): woken
at once by the changes this replica makes, and reading again now and then for those another
replica makes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from metallica.protools.engine import WorkflowState
from metallica.threads import in_thread

# How often a waiter re-reads a workflow that another replica may be driving.
WAITER_POLL_SECONDS = 0.25


@dataclass(eq=False)
class Watch:
    """One waiter's view: set when the workflow changes here, with its new state when the
    change came with one."""

    changed: asyncio.Event
    state: WorkflowState | None = None


class Watchers:
    """In-process wake-ups for whoever waits on a workflow (the creating request, a GET).

    Register first (:meth:`watch`), then read the workflow, then wait: a change notified
    between the read and the wait is not lost, the watch has already seen it. A change notified
    with the workflow's new state spares the waiter a read of its own.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, set[Watch]] = {}
        # Set at every change notified here, whoever waits (the log's tailer: tailer.py).
        self.any_change = asyncio.Event()
        # Set at every change too, for the announcer of the log's growth (tailer.py).
        self.log_grew = asyncio.Event()

    @contextlib.contextmanager
    def watch(self, workflow_id: str) -> Iterator[Watch]:
        """A watch of ``workflow_id``'s changes here, from now until the block ends."""
        watch = Watch(asyncio.Event())
        watches = self._waiting.setdefault(workflow_id, set())
        watches.add(watch)
        try:
            yield watch
        finally:
            waiting = self._waiting.get(workflow_id)
            if waiting is not None:
                waiting.discard(watch)
                if not waiting:
                    del self._waiting[workflow_id]

    def notify(self, workflow_id: str, state: WorkflowState | None = None) -> None:
        self.any_change.set()
        self.log_grew.set()
        for watch in self._waiting.get(workflow_id, ()):
            watch.state = state
            watch.changed.set()


async def wait_for_state(
    load: Callable[[str], WorkflowState | None],
    watchers: Watchers,
    workflow_id: str,
    seconds: float,
    *,
    poll: float = WAITER_POLL_SECONDS,
    known: WorkflowState | None = None,
) -> WorkflowState | None:
    """The workflow's state once terminal, or when ``seconds`` have passed.

    Woken at once by changes made here, which carry the new state (no read needed); ``poll``
    covers changes another replica makes. The watch is registered before the first read, so a
    change between a read and the wait that follows still wakes it. ``known``: the state the
    caller just committed, in place of the first read.
    """
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    with watchers.watch(workflow_id) as watch:
        state = known if known is not None else await in_thread(load, workflow_id)
        while state is not None and not state.terminal:
            remaining = until - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, poll)):  # see Relay's sleep
                    await watch.changed.wait()
            watch.changed.clear()
            notified, watch.state = watch.state, None
            state = notified if notified is not None else await in_thread(load, workflow_id)
    return state
