"""The ``metallica`` command. Each module is one family of subcommands and stays thin: it
parses, calls the part of the package that does the work, and prints.

- :mod:`.serve`: ``serve`` (one service process) and ``migrate``;
- :mod:`.local`: ``up`` (the whole stack as local processes) and ``demo``;
- :mod:`.client`: ``password create``, ``workflow result|list|show``;
- :mod:`.events`: ``events tail|export`` (the log);
- :mod:`.projections`: ``projections rebuild [--check]`` (the read models);
- :mod:`.subscriptions`: ``subscriptions create|list|show|rewind|parked|replay|delete``;
- :mod:`.lab`: ``scenarios list|run`` and the fault ``proxy``;
- :mod:`.bench`: ``bench``.

Every service setting is a flag of ``serve`` and an environment variable (``METALLICA_*``),
made from :mod:`metallica.config`; flags win.
"""

from __future__ import annotations

import click

from metallica.cli.bench import bench
from metallica.cli.client import password, workflow
from metallica.cli.common import Commands
from metallica.cli.events import events
from metallica.cli.lab import proxy, scenarios
from metallica.cli.local import demo, up
from metallica.cli.projections import projections
from metallica.cli.serve import migrate, serve
from metallica.cli.subscriptions import subscriptions


@click.group(
    cls=Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="metallica")
def main() -> None:
    """Metallica: a password-creation workflow that stays correct when the network misbehaves.

    protools orchestrates; the generator makes passwords; the mailer writes mails to a Maildir.
    Start with `metallica demo`, or `metallica up` and then `metallica password create NAME`.
    """


for command in (
    serve,
    migrate,
    up,
    password,
    workflow,
    events,
    subscriptions,
    projections,
    scenarios,
    proxy,
    demo,
    bench,
):
    main.add_command(command)

__all__ = ["main"]
