"""Events that evolve: an old shape read in the current one, the current one untouched, a
version from the future refused."""

from __future__ import annotations

import pytest

from metallica.protools import upcasting

STARTED_V1 = {"workflow": "password-creation", "input": {"username": "ann"}, "deadline": 9.0}


def test_a_version_1_start_reads_with_the_time_it_queued_as_0() -> None:
    assert upcasting.upcast("WorkflowStarted", 1, STARTED_V1) == {**STARTED_V1, "queued_ms": 0.0}


def test_an_upcaster_keeps_what_a_version_1_row_already_had() -> None:
    # The migration marked every stored event version 1, including starts that had queued_ms.
    stored = {**STARTED_V1, "queued_ms": 12.5}
    assert upcasting.upcast("WorkflowStarted", 1, stored) == stored


def test_current_shapes_and_unversioned_types_pass_untouched() -> None:
    current = {**STARTED_V1, "queued_ms": 3.0}
    assert upcasting.upcast("WorkflowStarted", 2, current) is current
    assert upcasting.current_version("StepSucceeded") == 1
    assert upcasting.upcast("StepSucceeded", 1, {"step": "x"}) == {"step": "x"}


def test_a_version_this_code_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="this code knows up to 2"):
        upcasting.upcast("WorkflowStarted", 3, STARTED_V1)


def test_every_version_below_the_current_one_has_its_upcaster() -> None:
    for event_type, version in upcasting.CURRENT.items():
        for old in range(1, version):
            assert (event_type, old) in upcasting.UPCASTERS
