"""Running scenarios for people: a lab per run, live progress, a table at the end."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from metallica.client import format_table
from metallica.lab.harness import Lab, LabConfig
from metallica.lab.scenarios import SCENARIOS, AnyLab, Scenario, ScenarioResult, run_scenario
from metallica.load.records import summarize

Progress = Callable[[str], None]


def run_scenarios(
    names: Sequence[str], config: LabConfig, progress: Progress
) -> list[ScenarioResult]:
    """Start a lab, run the named scenarios in order, stop the lab; return their results."""
    root = config.data_dir or Path(tempfile.mkdtemp(prefix="metallica-lab-"))
    results = []
    try:
        progress(
            f"starting {config.replicas} replica(s) of each service on {config.backend}, "
            f"behind fault proxies ({root})"
        )
        with Lab(config, root) as lab:
            results = run_in_order(lab, [SCENARIOS[name] for name in names], progress)
    finally:
        if config.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return results


def run_in_order(
    lab: AnyLab, scenarios: Sequence[Scenario[AnyLab]], progress: Progress
) -> list[ScenarioResult]:
    """Run ``scenarios`` one after the other on ``lab``, saying each one's start and verdict."""
    results = []
    for number, scenario in enumerate(scenarios, start=1):
        where = f"[{number}/{len(scenarios)}] {scenario.name}"
        progress(f"{where}: {scenario.fault} ...")
        result = run_scenario(lab, scenario)
        results.append(result)
        verdict = "ok" if result.ok else "VIOLATION"
        progress(f"{where}: {verdict} in {result.seconds:.1f} s")
    return results


def clients_saw(result: ScenarioResult) -> str:
    told = summarize(result.records)
    return ", ".join(f"{count} {outcome}" for outcome, count in told.items() if count) or "-"


def render(results: Sequence[ScenarioResult]) -> str:
    """The results table, then every failed check and violation in full."""
    rows = []
    for result in results:
        report = result.report
        invariants = "-"
        if report is not None:
            held = len(report.checked) - len({v.invariant for v in report.violations})
            invariants = f"{held}/{len(report.checked)}"
        checks = f"{sum(c.ok for c in result.checks)}/{len(result.checks)}"
        rows.append(
            [
                result.name,
                result.fault,
                clients_saw(result),
                f"{invariants} invariants, {checks} checks",
                f"{result.seconds:.1f} s",
                "ok" if result.ok else "FAIL",
            ]
        )
    lines = [format_table(["scenario", "fault", "clients were told", "checked", "time", ""], rows)]
    for result in results:
        details = [f"  check failed: {c.name} ({c.detail})" for c in result.checks if not c.ok]
        details += [
            f"  {line}"
            for v in (result.report.violations if result.report else [])
            for line in str(v).splitlines()
        ]
        if result.error:
            details.append(f"  error: {result.error}")
        notes = [f"  {c.name}: {c.detail}" for c in result.checks if c.ok and c.detail]
        if details or notes:
            lines.append(f"\n{result.name}:")
            lines += details + notes
    return "\n".join(lines)


def run_compose_scenarios(
    root: Path,
    names: Sequence[str],
    progress: Progress,
    *,
    build: bool = True,
    extra_env: Mapping[str, str] | None = None,
) -> list[ScenarioResult]:
    """Start the checkout's Compose stack (``root``) with the lab's override and the brief's
    replicas, run the named Compose scenarios in order, remove the stack (containers, networks,
    volumes) whatever happens; return their results. The image is built first when ``build``
    (``docker compose build``), else the one already built is used. ``extra_env``: more
    variables for Compose (the base images: ``scripts/compose-images``)."""
    import os
    import uuid

    from metallica.lab.compose import REPLICAS, ComposeLab, ComposeStack, lab_env
    from metallica.lab.compose_scenarios import COMPOSE_SCENARIOS
    from metallica.lab.scenarios import Check

    maildir = Path(tempfile.mkdtemp(prefix="metallica-compose-mail-"))
    maildir.chmod(0o777)  # the image's user writes there; the checker reads it
    env = {**lab_env(maildir), **(extra_env or {})}
    stack = ComposeStack(root, f"metallica-lab-{uuid.uuid4().hex[:8]}", env)
    results: list[ScenarioResult] = []
    try:
        if build:
            progress("docker compose build")
            stack.build()
        replicas = ", ".join(f"{count} {service}" for service, count in REPLICAS.items())
        progress(f"docker compose up --wait: PostgreSQL, {replicas} ({stack.project})")
        stack.up()
        with ComposeLab(stack, maildir) as lab:
            results = run_in_order(lab, [COMPOSE_SCENARIOS[name] for name in names], progress)
            logs = lab.logs()
            leaked = [secret for secret in lab.secrets() if secret in logs]
            if results:
                results[-1].checks.append(
                    Check("no secret in any container's log", not leaked, f"{len(leaked)} found")
                )
            if not all(result.ok for result in results) and os.environ.get("CI"):
                progress("the stack's logs, last lines:\n" + "\n".join(logs.splitlines()[-80:]))
    finally:
        progress("docker compose down --volumes")
        stack.down()
        shutil.rmtree(maildir, ignore_errors=True)
    return results
