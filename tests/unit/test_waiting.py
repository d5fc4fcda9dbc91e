"""A request waiting on a workflow is woken by a change made here, however close it comes."""

from __future__ import annotations

import asyncio
import time

from metallica.protools import engine
from metallica.protools.watchers import Watchers, wait_for_state

RUNNING = engine.WorkflowState("wf-1", version=2)
DONE = engine.WorkflowState("wf-1", version=4, status=engine.COMPLETED_STATUS)


def test_a_change_between_the_read_and_the_wait_is_not_lost() -> None:
    # The workflow completes (and notifies) right after the waiter read it as running, before
    # it starts waiting: the waiter must see it at once, not at its next poll.
    watchers = Watchers()
    reads: list[float] = []

    def load(workflow_id: str) -> engine.WorkflowState:
        reads.append(time.monotonic())
        if len(reads) == 1:
            return RUNNING  # as read; meanwhile, on the event loop, the relay finishes it:
        return DONE

    async def main() -> tuple[engine.WorkflowState | None, float]:
        loop = asyncio.get_running_loop()

        def load_then_finish(workflow_id: str) -> engine.WorkflowState:
            state = load(workflow_id)
            if state is RUNNING:
                loop.call_soon_threadsafe(watchers.notify, workflow_id)
                time.sleep(0.05)  # the notification lands before this read returns
            return state

        started = time.monotonic()
        state = await wait_for_state(load_then_finish, watchers, "wf-1", 60, poll=30)
        return state, time.monotonic() - started

    state, elapsed = asyncio.run(asyncio.wait_for(main(), 20))
    assert state == DONE
    assert elapsed < 5, f"woken by the poll after {elapsed:.1f} s, not by the notification"
    assert len(reads) == 2


def test_a_waiter_gives_up_after_its_time_with_the_state_it_has() -> None:
    async def main() -> engine.WorkflowState | None:
        return await wait_for_state(lambda _: RUNNING, Watchers(), "wf-1", 0.2, poll=0.05)

    assert asyncio.run(main()) == RUNNING


def test_watchers_forget_a_watch_once_it_ends() -> None:
    async def main() -> None:
        watchers = Watchers()
        with watchers.watch("wf-1") as first, watchers.watch("wf-1") as second:
            watchers.notify("wf-1")
            assert first.changed.is_set()
            assert second.changed.is_set()
        watchers.notify("wf-1")  # nobody watches: nothing to do, nothing kept
        assert watchers._waiting == {}

    asyncio.run(main())


def test_a_change_that_brings_its_state_needs_no_read() -> None:
    watchers = Watchers()
    reads: list[str] = []

    def load(workflow_id: str) -> engine.WorkflowState:
        reads.append(workflow_id)
        return RUNNING

    async def main() -> engine.WorkflowState | None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, watchers.notify, "wf-1", RUNNING)
        loop.call_later(0.2, watchers.notify, "wf-1", DONE)
        return await wait_for_state(load, watchers, "wf-1", 30, poll=20)

    assert asyncio.run(asyncio.wait_for(main(), 10)) == DONE
    assert reads == ["wf-1"]  # the first read only


def test_the_state_after_new_events_is_their_fold() -> None:
    started = engine.RecordedEvent(
        1, "wf-1", 1, engine.STARTED, {"workflow": "w", "input": {}, "deadline": 9.0}, 1.0
    )
    state = engine.fold("wf-1", [started])
    assert state is not None
    new = [
        engine.NewEvent(engine.SUCCEEDED, {"step": "a", "attempt": 1, "result": {"x": 1}}),
        engine.NewEvent(engine.COMPLETED, {}),
    ]
    after = engine.after(state, new, now=5.0)
    assert (after.version, after.status, after.finished_at) == (3, engine.COMPLETED_STATUS, 5.0)
    assert after.results == {"a": {"x": 1}}
