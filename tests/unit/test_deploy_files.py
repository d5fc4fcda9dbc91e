"""docker-compose.yml, Dockerfile and .dockerignore, read as files (no Docker engine here).

What the README promises of them: one image built once, no secret with a default, health checks
on ``/readyz``, protools published on 127.0.0.1 only, the dependencies in a layer of their own,
and a build context that carries neither the virtualenv nor the local token and keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("protools", "generator", "mailer")
SECRET = re.compile(r"PASSWORD|TOKEN|KEY", re.IGNORECASE)
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?P<form>:?[-?])?(?P<word>[^}]*)\}")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def with_defaults(value: str) -> str:
    """Compose's interpolation with nothing set: ``${X:-d}`` is ``d``, ``${X:?m}`` is ``<X>``."""

    def one(match: re.Match[str]) -> str:
        form = match["form"] or ""
        return match["word"] if form.endswith("-") else f"<{match['name']}>"

    return VARIABLE.sub(one, value)


def test_one_image_tagged_once_and_built_by_one_service() -> None:
    services = compose()["services"]

    assert {services[name]["image"] for name in APP_SERVICES} == {"metallica:local"}
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["protools"]
    for name in APP_SERVICES:
        assert services[name]["pull_policy"] == "never"  # never looked for in a registry


def test_no_secret_has_a_default() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    variables = list(VARIABLE.finditer(text))

    assert variables
    for match in variables:
        if SECRET.search(match["name"]):
            assert match["form"] == ":?", f"{match[0]} must be required, with no default"
        else:
            assert match["name"].endswith(
                ("_REPLICAS", "_PUBLISH_ADDRESS", "_PORTS", "_IMAGE")
            ) or match["name"] in ("EXTRA_CA_CERTS", "METALLICA_LOG_READERS"), match[0]
    for name in ("docker-compose.yml", "Dockerfile", "README.md"):
        assert "change-me" not in (ROOT / name).read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^\s*(ENV|ARG)\b.*(PASSWORD|TOKEN|_KEYS)", dockerfile, re.MULTILINE)


def test_the_official_images_are_the_defaults() -> None:
    services = compose()["services"]

    assert with_defaults(services["postgres"]["image"]) == "postgres:15"
    build = services["protools"]["build"]
    assert with_defaults(build["args"]["BASE_IMAGE"]) == "python:3.11-slim"
    assert re.search(
        r"^ARG BASE_IMAGE=python:3\.11-slim\nFROM \$\{BASE_IMAGE\}$",
        (ROOT / "Dockerfile").read_text(),
        re.M,
    )
    # The build machine's CA additions: a build secret, none unless EXTRA_CA_CERTS names a file.
    assert build["secrets"] == ["extra_ca_certs"]
    assert with_defaults(compose()["secrets"]["extra_ca_certs"]["file"]) == "/dev/null"
    for name in (*APP_SERVICES, "postgres"):
        assert "secrets" not in services[name]  # the build's only: no container mounts it


def test_every_service_reports_healthy_only_when_ready() -> None:
    services = compose()["services"]

    for name in APP_SERVICES:
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert "/readyz" in probe
        assert "/healthz" not in probe
    healthcheck = re.search(
        r"^HEALTHCHECK .*?(?<!\\)$", (ROOT / "Dockerfile").read_text(), re.M | re.S
    )
    assert healthcheck is not None
    assert "/readyz" in healthcheck[0]


def test_protools_is_published_on_the_loopback_only_by_default() -> None:
    services = compose()["services"]

    ports = [with_defaults(str(port)) for port in services["protools"]["ports"]]
    assert ports
    assert all(port.startswith("127.0.0.1:") for port in ports), ports
    for name in ("generator", "mailer", "postgres"):
        assert "ports" not in services[name]


def test_protools_names_each_service_once_and_resolves_its_replicas() -> None:
    environment = compose()["services"]["protools"]["environment"]

    assert environment["METALLICA_GENERATOR_URLS"] == "http://generator:8000"
    assert environment["METALLICA_MAILER_URLS"] == "http://mailer:8000"


def test_the_dependencies_are_installed_before_the_code_is_copied() -> None:
    steps = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip().startswith(("COPY", "RUN"))
    ]

    def index(fragment: str) -> int:
        return next(i for i, step in enumerate(steps) if fragment in step)

    assert index("COPY pyproject.toml uv.lock") < index("--no-install-project") < index("COPY src")
    assert index("COPY src") < steps.index("RUN uv sync --frozen --no-dev")


def dockerignore_excludes(path: str) -> bool:
    """Whether ``.dockerignore`` keeps ``path`` out of the build context: Docker's rules, as far
    as this file uses them (the last matching line wins; a line matches a path or any of its
    parent directories; ``*`` stays within a path segment, ``**`` does not; ``!`` re-includes).
    """
    excluded = False
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = _pattern(line.removeprefix("!").strip("/"))
        parts = path.split("/")
        if any(pattern.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def _pattern(glob: str) -> re.Pattern[str]:
    regex, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif glob[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif glob[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(glob[i]), i + 1
    return re.compile(regex)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".metallica/api-token",
        ".metallica/generator-keys",
        ".env",
        ".git/HEAD",
        ".mypy_cache/3.11/cache.db",
        ".pytest_cache/README.md",
        ".hypothesis/examples/x",
        ".tools/bin/uv",
        "tests/conftest.py",
        "bench/results-sqlite.json",
        "data/protools.db",
        "src/metallica/__pycache__/cli.cpython-311.pyc",
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert dockerignore_excludes(path)


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    copied = [
        source
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]

    assert copied
    for source in copied:
        assert not dockerignore_excludes(source), source
    for path in ("src/metallica/cli/__init__.py", "src/metallica/storage/sql/sqlite/common.sql"):
        assert not dockerignore_excludes(path), path


def test_the_lab_override_runs_protools_with_the_labs_settings() -> None:
    """The Compose scenarios run with the same short timeouts as the local lab's, fault points
    on, and every port published on 127.0.0.1 only, on ports the engine picks."""
    from metallica.lab.harness import LAB_SETTINGS

    class ComposeLoader(yaml.SafeLoader):  # type: ignore[misc]
        """Compose's merge tags (``!override``, ``!reset``) read as their plain value."""

    for tag in ("!override", "!reset"):
        ComposeLoader.add_constructor(tag, lambda loader, node: loader.construct_sequence(node))
    text = (ROOT / "deploy" / "docker-compose.lab.yml").read_text()
    override = yaml.load(text, Loader=ComposeLoader)  # noqa: S506 (a safe loader)
    services = override["services"]
    protools = {str(k): str(v) for k, v in services["protools"]["environment"].items()}
    expected = {k: v for k, v in LAB_SETTINGS.items() if k != "METALLICA_LOG_LEVEL"}
    assert {k: protools[k] for k in expected} == expected
    assert services["generator"]["environment"]["METALLICA_FAULTS"] == "1"
    for name in ("postgres", "generator", "protools"):
        assert [str(port) for port in services[name]["ports"]] in (
            ["127.0.0.1::8000"],
            ["127.0.0.1::5432"],
        )
    assert "docker-compose.lab.yml" not in (ROOT / "docker-compose.yml").read_text()
