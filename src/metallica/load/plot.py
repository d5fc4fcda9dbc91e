"""Pictures of an open loop (latency and shedding over time) and of a capacity search, and
matplotlib's pyplot on a backend that needs no screen (the bench's closed-loop plot uses it too)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any


def pyplot_module() -> ModuleType:
    """matplotlib's pyplot on a backend that needs no screen; a RuntimeError if not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:  # an optional dependency: `pip install 'metallica[bench]'`
        raise RuntimeError("--plot needs matplotlib: pip install 'metallica[bench]'") from None
    return pyplot


def plot_timeline(timeline: list[dict[str, Any]], path: Path, *, title: str = "") -> None:
    """Admitted p50 and p99 per second (left axis, log scale: overload spans decades) and
    offered, completed and shed commands per second (right), into the PNG ``path``."""
    pyplot = pyplot_module()
    figure, (top, bottom) = pyplot.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    seconds = [row["second"] for row in timeline]
    for key, label in (("admitted_p50_ms", "admitted p50"), ("admitted_p99_ms", "admitted p99")):
        points = [(row["second"], row[key]) for row in timeline if row[key] is not None]
        top.plot([x for x, _ in points], [y for _, y in points], ".-", label=label)
    top.set_yscale("log")
    top.set_ylabel("latency from the scheduled send, ms")
    top.grid(True, which="both", alpha=0.3)
    top.legend()
    for key, label, style in (
        ("target_rate", "target rate", "--"),
        ("arrivals", "arrivals", "-"),
        ("completed", "completed", "-"),
        ("rejected", "shed (429/503)", "-"),
        ("errors", "errors", ":"),
    ):
        bottom.plot(seconds, [row[key] for row in timeline], style, label=label)
    bottom.set_xlabel("second of the schedule (requests binned by when they were due)")
    bottom.set_ylabel("per second")
    bottom.set_ylim(bottom=0)
    bottom.grid(True, alpha=0.3)
    bottom.legend()
    figure.suptitle(title or "metallica bench, open loop")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def plot_capacity(capacity: dict[str, Any], path: Path, *, title: str = "") -> None:
    """Each probe's admitted p99 against its rate, passes and failures apart, with the bound."""
    pyplot = pyplot_module()
    figure, axes = pyplot.subplots(figsize=(8, 4.5))
    for passed, marker, label in ((True, "o", "passed"), (False, "x", "failed")):
        probes = [p for p in capacity["probes"] if p["passed"] is passed and p["p99_ms"]]
        axes.plot([p["rate"] for p in probes], [p["p99_ms"] for p in probes], marker, label=label)
    axes.axhline(capacity["p99_bound_ms"], linestyle="--", color="grey", label="p99 bound")
    axes.axvline(capacity["capacity"], linestyle=":", color="black", label="capacity")
    axes.set_xlabel("arrival rate, /s")
    axes.set_ylabel("admitted p99, ms")
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.suptitle(title or f"metallica bench --capacity: {capacity['capacity']:g} wf/s")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
