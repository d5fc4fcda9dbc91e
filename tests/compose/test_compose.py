"""The user's own environment, for real: the Compose stack built and started from this
checkout by a Docker engine on this machine, then the README's recipe and the brief's cases
run against it from outside, through its published ports only.

The test command (``scripts/test``) installs and starts the engine and builds the local
stand-ins for the base images when the official ones cannot be pulled; here a missing engine
is a failure, never a skip. Two test runs on one machine share its engine: their Compose parts
take turns (a lock file), each under a project name of its own, and each removes what it
started (containers, networks, volumes).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from metallica.lab.compose_scenarios import COMPOSE_SCENARIOS
from metallica.lab.runner import render, run_compose_scenarios

pytestmark = [pytest.mark.compose, pytest.mark.xdist_group("compose"), pytest.mark.timeout(1500)]

ROOT = Path(__file__).parents[2]
LOCK = Path(tempfile.gettempdir()) / "metallica-compose.lock"
LOCK_WAIT = 1200.0
RECIPE = re.compile(r"<!-- compose recipe -->\s*```sh\n(.*?)```", re.S)
# What the build reads (the .dockerignore allowlist) and what the recipe runs.
CONTEXT = (
    "Dockerfile",
    ".dockerignore",
    "docker-compose.yml",
    "deploy",
    "pyproject.toml",
    "uv.lock",
    "README.md",
    "src",
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The machine's Docker engine with Compose v2, this run's turn at it, and the base images
    to build from (``scripts/compose-images``: the official ones, else Debian-built stand-ins)
    as the variables Compose reads."""
    version = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert version.returncode == 0, (
        "no Docker engine with Compose v2 answers: run the tests with scripts/test, which "
        f"installs and starts one (scripts/docker-engine): {version.stderr.strip()}"
    )
    with LOCK.open("a") as lock:
        until = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < until, "another run kept the Compose lock for 20 min"
                time.sleep(1)
        try:
            yield images(tmp_path_factory.mktemp("images") / "images.env")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def images(env_file: Path) -> dict[str, str]:
    started = time.monotonic()
    done = subprocess.run(
        [str(ROOT / "scripts" / "compose-images"), str(env_file)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"base images ready in {time.monotonic() - started:.1f} s")
    lines = env_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_the_readme_recipe_builds_starts_and_answers(
    engine: dict[str, str], tmp_path: Path
) -> None:
    """The README's Compose section, run as written (in a copy of the build context, so the
    checkout gets no .env), then taken down."""
    recipe = RECIPE.search((ROOT / "README.md").read_text())
    assert recipe, "README.md has no <!-- compose recipe --> block"
    for name in CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy2(source, tmp_path / name)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    project = f"metallica-readme-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **engine, "COMPOSE_PROJECT_NAME": project, "PROTOOLS_PORTS": ""}
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", recipe.group(1)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        subprocess.run(
            ["docker", "compose", "down", "--volumes", "--remove-orphans", "--timeout", "5"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
    print(f"the README's recipe ran in {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # `password create` prints the password alone on stdout.
    assert re.fullmatch(r"\S{12,}", done.stdout.strip().splitlines()[-1]), done.stdout[-2000:]


def test_the_brief_holds_on_the_compose_stack_with_replicas(engine: dict[str, str]) -> None:
    started = time.monotonic()
    results = run_compose_scenarios(
        ROOT, list(COMPOSE_SCENARIOS), print, build=True, extra_env=engine
    )
    print(render(results))
    print(f"the Compose scenarios ran in {time.monotonic() - started:.1f} s")
    assert [r.name for r in results] == list(COMPOSE_SCENARIOS)
    assert all(result.ok for result in results), render(results)
