"""The flags of `metallica serve`, made from the settings table (:mod:`metallica.config`): one
flag and one ``METALLICA_*`` variable per setting, with its type, bounds, default and help."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from metallica import config


def click_type(setting: config.Setting) -> Any:
    """The click type that parses and bounds ``setting``'s values."""
    if setting.choices:
        return click.Choice(setting.choices, case_sensitive=False)
    if setting.kind is Path:
        return click.Path(path_type=Path, dir_okay=setting.name == "maildir")
    if setting.kind is int and (setting.minimum is not None or setting.maximum is not None):
        low = None if setting.minimum is None else int(setting.minimum)
        high = None if setting.maximum is None else int(setting.maximum)
        return click.IntRange(low, high)
    if setting.kind is float and (setting.minimum is not None or setting.maximum is not None):
        return click.FloatRange(setting.minimum, setting.maximum)
    return setting.kind


def setting_option(setting: config.Setting) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--<name>`` (``--<name>/--no-<name>`` for a switch), read from ``METALLICA_<NAME>``."""
    shown = setting.default not in (None, "")
    if setting.kind is bool:
        return click.option(
            f"--{setting.name}/--no-{setting.name}",
            envvar=setting.variable,
            default=setting.default,
            show_default=shown,
            show_envvar=True,
            help=setting.help,
        )
    return click.option(
        f"--{setting.name}",
        envvar=setting.variable,
        type=click_type(setting),
        default=setting.default,
        show_default=shown,
        show_envvar=True,
        help=setting.help,
    )


def service_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add every service setting to a command, as a flag and an environment variable."""
    for setting in reversed(config.SETTINGS):
        function = setting_option(setting)(function)
    return function
