"""A new command's place under the admission limit and its delivery slot are each given back
exactly once: at the end of their block, or by the delivery they were handed to."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from metallica.protools.flow import Admission, FlowSettings
from metallica.protools.intake import Place, Slot
from metallica.protools.relay import Finished, Relay


class FakeRelay:
    def __init__(self, free: int) -> None:
        self.free = free
        self.delivering: list[tuple[Any, Finished | None]] = []

    def try_reserve(self) -> bool:
        if self.free == 0:
            return False
        self.free -= 1
        return True

    def release(self) -> None:
        self.free += 1

    def start_delivery(self, message: Any, known: Any = None, *, finished: Finished) -> None:
        self.delivering.append((message, finished))


def admitted(admission: Admission) -> Place:
    async def admit() -> Place:
        assert (await admission.admit(backlog=0, patience=0)).refusal is None
        return Place(admission, 0.0)

    return asyncio.run(admit())


def test_a_place_is_given_back_once_however_often_it_is_released() -> None:
    admission = Admission(FlowSettings())
    with admitted(admission) as place:
        assert admission.limiter.in_flight == 1
        place.release()
        assert admission.limiter.in_flight == 0
    assert admission.limiter.in_flight == 0  # the block's end gives back nothing more


def test_a_place_given_up_on_an_error_is_given_back() -> None:
    admission = Admission(FlowSettings())
    with pytest.raises(ValueError, match="body refused"), admitted(admission):
        raise ValueError("body refused")
    assert admission.limiter.in_flight == 0


def test_a_delivery_takes_over_the_slot_and_the_place() -> None:
    admission, relay = Admission(FlowSettings()), FakeRelay(free=1)
    with admitted(admission) as place, Slot(cast(Relay, relay)) as slot:
        assert (slot.held, relay.free) == (True, 0)
        slot.start_delivery(cast(Any, "message"), None, place)
    # The block ended: neither was given back, the delivery holds both.
    assert (relay.free, admission.limiter.in_flight) == (0, 1)
    [(_, finished)] = relay.delivering
    assert finished is not None
    finished(None)
    assert admission.limiter.in_flight == 0
    with pytest.raises(AssertionError):
        place.hand_over()  # handed over once


def test_no_free_slot_holds_nothing_to_give_back() -> None:
    relay = FakeRelay(free=0)
    with Slot(cast(Relay, relay)) as slot:
        assert not slot.held
    assert relay.free == 0
