"""Consumer groups' pure rules: which events a pull hands out, backoff, what requests say."""

from __future__ import annotations

import pytest

from metallica.errors import InvalidInput
from metallica.protools import groups
from metallica.protools.groups import Pending

NOW = 1000.0


def pending(
    position: int, stream: str, *, leased_until: float | None = None, due: float = 0.0
) -> Pending:
    return Pending(position, stream, 0, None, leased_until, due)


def chosen(events: list[Pending], limit: int = 10) -> list[int]:
    return [event.position for event in groups.choose(events, NOW, limit)]


def test_a_workflow_is_handed_out_from_its_first_unfinished_event_in_order() -> None:
    events = [pending(1, "a"), pending(2, "b"), pending(3, "a"), pending(4, "b")]
    assert chosen(events) == [1, 2, 3, 4]
    assert chosen(events, limit=3) == [1, 2, 3]


def test_an_event_leased_or_not_due_holds_back_the_rest_of_its_workflow_only() -> None:
    events = [
        pending(1, "a", leased_until=NOW + 5),  # leased to someone
        pending(2, "b", due=NOW + 5),  # waiting out a nack's delay
        pending(3, "a"),
        pending(4, "b"),
        pending(5, "c"),
    ]
    assert chosen(events) == [5]


def test_an_expired_lease_is_free_again() -> None:
    events = [pending(1, "a", leased_until=NOW - 1), pending(2, "a")]
    assert chosen(events) == [1, 2]


def test_a_waiting_pull_sleeps_until_the_first_event_held_back_by_time_is_free() -> None:
    events = [
        pending(1, "a", leased_until=NOW + 5),  # a lease that runs out in 5 s
        pending(2, "b", due=NOW + 2),  # a nack's delay that passes in 2 s
        pending(3, "a"),  # free by time, held back by its workflow's first: not a time
        pending(4, "c", leased_until=NOW + 9, due=NOW + 12),  # free once both have passed
    ]
    assert groups.next_free(events, NOW) == 2.0
    assert groups.next_free(events[2:], NOW) == 12.0
    assert groups.next_free([pending(5, "d")], NOW) is None  # free now: nothing to wait for
    assert groups.next_free([], NOW) is None


def test_the_backoff_doubles_from_one_second_up_to_a_minute() -> None:
    assert [groups.backoff(n) for n in (1, 2, 3, 7, 50)] == [1.0, 2.0, 4.0, 60.0, 60.0]


def test_settings_take_defaults_and_refuse_what_is_out_of_range() -> None:
    assert groups.settings_of({}) == groups.GroupSettings((), 30.0, 10, 1000)
    assert groups.settings_of({"types": ["B", "A", "A"]}).types == ("A", "B")
    for body in (
        {"ack_wait": 0},
        {"ack_wait": True},
        {"max_deliver": 0},
        {"max_deliver": 1.5},
        {"max_ack_pending": 10**6},
        {"types": "A"},
        {"types": ["not a type"]},
    ):
        with pytest.raises(InvalidInput) as refused:
            groups.settings_of(body)
        assert refused.value.extensions["field"] == next(iter(body))


def test_names_starts_batches_and_positions_are_checked() -> None:
    assert groups.group_name("billing.v2") == "billing.v2"
    for name in ("", "Billing", "-x", "x" * 65, "a/b"):
        with pytest.raises(InvalidInput):
            groups.group_name(name)
    assert groups.start_of({}) == "end"
    assert groups.start_of({"start": "start"}) == "start"
    assert groups.start_of({"start": 7}) == 7
    for start in (-1, "7", True, 1.5):
        with pytest.raises(InvalidInput):
            groups.start_of({"start": start})
    assert groups.batch_of({}) == (10, 0.0)
    with pytest.raises(InvalidInput):
        groups.batch_of({"batch": 1001})
    assert groups.positions_of({"positions": [3, 1, 3]}) == [1, 3]
    for positions in ([], [0], ["1"], [True], list(range(1, 1002)), None):
        with pytest.raises(InvalidInput):
            groups.positions_of({"positions": positions})
    with pytest.raises(InvalidInput):
        groups.member_name({"member": "has space"})
    assert groups.nack_delay({}) is None
    assert groups.nack_delay({"delay": 2}) == 2.0
