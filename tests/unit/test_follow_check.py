"""The followers' checker: each kind of fault it must report, and what it must let pass."""

from __future__ import annotations

from metallica.load.follow_check import Seen, check_follow

STORED = [Seen(1, "a", 1), Seen(2, "b", 1), Seen(3, "a", 2), Seen(4, "b", 2)]


def test_everything_once_in_order_is_ok() -> None:
    report = check_follow("s", STORED, STORED, in_log_order=True)
    assert report.ok
    assert str(report) == "s: 4 received of 4 stored"


def test_a_lost_a_duplicated_and_an_unexpected_event_are_reported() -> None:
    received = [Seen(1, "a", 1), Seen(3, "a", 2), Seen(3, "a", 2), Seen(4, "b", 2), Seen(9, "c", 1)]
    report = check_follow("s", STORED, received, in_log_order=True)
    assert report.lost == [2]
    assert report.duplicated == [3]
    assert report.unexpected == [9]
    assert report.non_monotonic == [3]  # the second 3 did not follow the first
    assert not report.ok
    assert "1 lost (first: [2])" in str(report)


def test_an_event_stored_otherwise_is_unexpected() -> None:
    received = [*STORED[:3], Seen(4, "b", 3)]
    assert check_follow("s", STORED, received, in_log_order=True).unexpected == [4]


def test_a_group_may_interleave_workflows_and_deliver_again_but_not_reorder_one() -> None:
    interleaved = [Seen(2, "b", 1), Seen(1, "a", 1), Seen(4, "b", 2), Seen(1, "a", 1), STORED[2]]
    report = check_follow("g", STORED, interleaved, in_log_order=False, duplicates_allowed=True)
    assert report.ok, str(report)
    assert report.duplicated == [1]
    reordered = [Seen(3, "a", 2), Seen(1, "a", 1), Seen(2, "b", 1), Seen(4, "b", 2)]
    report = check_follow("g", STORED, reordered, in_log_order=False, duplicates_allowed=True)
    assert report.out_of_order == ["a"]
    assert not report.ok
    assert not check_follow("s", STORED, interleaved, in_log_order=True).ok
