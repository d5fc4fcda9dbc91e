"""Where a stream of the log starts: the API's and the console's, one rule."""

from __future__ import annotations

import pytest

from metallica.errors import BadRequest, PositionPastHead
from metallica.protools.log import resume_after


def test_a_stream_starts_after_the_position_asked_for() -> None:
    assert resume_after(7, None, head=10) == 7
    assert resume_after(10, None, head=10) == 10


def test_a_reconnecting_clients_last_event_id_overrides_the_position_asked_for() -> None:
    assert resume_after(3, "9", head=10) == 9
    assert resume_after(9, "3", head=10) == 3  # it had read up to 3, whatever the URL says


@pytest.mark.parametrize(
    ("requested", "last_event_id", "field"),
    [(11, None, "after"), (0, "11", "Last-Event-ID")],
)
def test_a_position_past_the_head_is_refused_naming_its_field(
    requested: int, last_event_id: str | None, field: str
) -> None:
    with pytest.raises(PositionPastHead) as refused:
        resume_after(requested, last_event_id, head=10)
    assert refused.value.detail.startswith(field)


@pytest.mark.parametrize("text", ["-1", "x", "1.5", "", "٣"])
def test_a_last_event_id_that_is_no_position_is_refused(text: str) -> None:
    with pytest.raises(BadRequest) as refused:
        resume_after(0, text, head=10)
    assert "Last-Event-ID" in refused.value.detail
