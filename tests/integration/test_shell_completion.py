"""Shell completion as the README documents it: ``_METALLICA_COMPLETE=<shell>_source metallica``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def metallica_command() -> str:
    """The installed entry point (completion is keyed on the program's name, ``metallica``)."""
    beside = Path(sys.executable).parent / "metallica"
    found = str(beside) if beside.exists() else shutil.which("metallica")
    assert found, "the metallica entry point is not installed"
    return found


def complete(**variables: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("METALLICA_")}
    result = subprocess.run(
        [metallica_command()],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, **variables},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("shell", "expected"),
    [
        ("bash", "complete -o nosort -F _metallica_completion metallica"),
        ("zsh", "compdef _metallica_completion metallica"),
        ("fish", "complete --no-files --command metallica"),
    ],
)
def test_each_shell_gets_its_completion_script(shell: str, expected: str) -> None:
    script = complete(_METALLICA_COMPLETE=f"{shell}_source")

    assert "_metallica_completion" in script
    assert expected in script


def test_the_script_completes_commands_and_the_services_to_serve() -> None:
    commands = complete(
        _METALLICA_COMPLETE="bash_complete", COMP_WORDS="metallica pa", COMP_CWORD="1"
    )
    services = complete(
        _METALLICA_COMPLETE="bash_complete", COMP_WORDS="metallica serve ", COMP_CWORD="2"
    )

    assert commands.split() == ["plain,password"]
    assert {"plain,protools", "plain,generator", "plain,mailer"} <= set(services.split())
