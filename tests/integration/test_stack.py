"""The local stack's processes: none outlives the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import eventually

pytestmark = pytest.mark.slow

STARTER = """
import pathlib, sys, time
from metallica.stack import LocalStack
stack = LocalStack(pathlib.Path(sys.argv[1]), "token", 1)
stack.start()
print(" ".join(str(r.process.pid) for rs in stack.members.values() for r in rs), flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits for its parent to read its status.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_services_die_with_a_stack_killed_without_its_cleanup(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("METALLICA_")}
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert starter.stdout is not None
        children = [int(pid) for pid in starter.stdout.readline().split()]
        assert len(children) == 3
        assert all(alive(pid) for pid in children)
    finally:
        starter.send_signal(signal.SIGKILL)  # no cleanup runs
        starter.communicate(timeout=10)
    assert eventually(lambda: not any(alive(pid) for pid in children), seconds=15)
