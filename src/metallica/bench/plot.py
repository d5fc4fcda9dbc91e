"""Throughput and p99 latency against concurrency, one line per target, as a PNG."""

from __future__ import annotations

from pathlib import Path

from metallica.bench.runner import BenchReport
from metallica.load.plot import pyplot_module


def plot(report: BenchReport, path: Path, *, title: str = "") -> None:
    """Draw ``report`` into ``path`` (matplotlib, no screen needed)."""
    pyplot = pyplot_module()
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4.2))
    for target, history in dict.fromkeys((r.target, r.history) for r in report.rounds):
        rounds = sorted(
            (r for r in report.rounds if (r.target, r.history) == (target, history)),
            key=lambda r: r.concurrency,
        )
        label = f"{target} ({report.config.get('backend')})" if target != "floor" else target
        if history:
            label += f", {history:,} stored"
        left.plot(
            [r.concurrency for r in rounds], [r.throughput for r in rounds], "o-", label=label
        )
        right.plot([r.concurrency for r in rounds], [r.p99_ms for r in rounds], "o-", label=label)
    for axes, ylabel in ((left, "workflows / s"), (right, "p99 latency, ms")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("concurrency (closed loop)")
        axes.set_ylabel(ylabel)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    figure.suptitle(title or f"metallica bench, N={report.config.get('count')} per point")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
