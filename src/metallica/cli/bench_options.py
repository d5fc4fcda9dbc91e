"""What `metallica bench` makes of its options: the concurrencies, the open loop's schedule,
and a usage error for an option the chosen mode would ignore."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from metallica.load.schedule import Phase


def concurrencies(value: str) -> list[int]:
    try:
        found = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter("a comma-separated list of integers, e.g. 1,4,16,64") from None
    if not found or any(c < 1 or c > 4096 for c in found):
        raise click.BadParameter("each concurrency is 1 to 4096")
    return found


# Options of one mode only: given to another, they would be silently ignored.
_CLOSED_LOOP_ONLY = ("concurrency", "count", "floor", "preload", "consoles")
_OPEN_LOOP_ONLY = ("rate", "ramp", "duration", "phases")
_OPEN_OR_CAPACITY = ("goodput_deadline", "wait_seconds", "seed")
_CAPACITY_ONLY = ("p99_bound_ms", "step_seconds", "start_rate", "max_rate", "bisections")


def options_fit(context: click.Context, *, open_loop: bool, capacity: bool) -> None:
    """A usage error for an option the chosen mode would ignore."""
    from click.core import ParameterSource

    flags = {param.name: param.opts[-1] for param in context.command.params}

    def given(names: tuple[str, ...]) -> list[str]:
        return [
            flags[name]
            for name in names
            if context.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
        ]

    if open_loop and capacity:
        raise click.UsageError(
            "--capacity runs its own open loops: drop --open-loop, --rate, --ramp and --phases"
        )
    wrong = [
        *(given(_CLOSED_LOOP_ONLY) if open_loop or capacity else []),
        *(given(_OPEN_LOOP_ONLY) if not open_loop else []),
        *(given(_OPEN_OR_CAPACITY) if not (open_loop or capacity) else []),
        *(given(_CAPACITY_ONLY) if not capacity else []),
    ]
    mode = "--capacity" if capacity else "--open-loop" if open_loop else "the closed loop"
    if wrong:
        raise click.UsageError(f"{', '.join(wrong)}: not an option of {mode}")
    if given(("phases",)) and given(("duration",)):
        raise click.UsageError("--phases carry their own durations: drop --duration")


def open_phases(
    rate: float | None, ramp: str | None, duration: float, phases: str | None
) -> list[Phase]:
    """The open loop's schedule from exactly one of --rate, --ramp and --phases."""
    from metallica.load.schedule import Phase, parse_phases, parse_ramp, validate

    if sum(option is not None for option in (rate, ramp, phases)) != 1:
        raise click.UsageError("an open loop takes one of --rate, --ramp and --phases")
    hint = "--phases" if phases is not None else "--ramp" if ramp is not None else "--rate"
    try:
        if phases is not None:
            return parse_phases(phases)
        if ramp is not None:
            return [parse_ramp(ramp, duration)]
        assert rate is not None
        found = [Phase.constant(rate, duration)]
        validate(found)
        return found
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=hint) from None
