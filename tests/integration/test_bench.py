"""`metallica bench` as users run it: a stack of its own, rounds, the floor, the checker, files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metallica.protools import store
from metallica.storage import open_database

pytestmark = pytest.mark.slow


def bench(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``metallica bench ARGS`` as a user runs it, without the caller's METALLICA_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("METALLICA_")}
    return subprocess.run(
        [sys.executable, "-m", "metallica", "bench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_bench_measures_durable_and_floor_rounds_checks_and_draws(tmp_path: Path) -> None:
    results, picture = tmp_path / "bench.json", tmp_path / "bench.png"
    options = ["-c", "1,3", "-n", "12", "--warmup", "3", "--floor"]
    finished = bench(tmp_path, *options, "--json", str(results), "--plot", str(picture))

    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(results.read_text())
    rounds = [(r["target"], r["concurrency"], r["count"]) for r in report["rounds"]]
    assert rounds == [
        ("metallica", 1, 12),
        ("floor", 1, 12),
        ("metallica", 3, 12),
        ("floor", 3, 12),
    ]
    for measured in report["rounds"]:
        assert measured["errors"] == {}
        assert measured["throughput"] > 0
        assert 0 < measured["p50_ms"] <= measured["p99_ms"] <= measured["max_ms"]
        assert {"generator-1", "mailer-1", "protools-1", "floor-1"} <= set(
            measured["cpu_ms_per_workflow"]
        )
    durable = [r for r in report["rounds"] if r["target"] == "metallica"]
    assert all(r["floor_ratio"] > 0 for r in durable)
    assert all(0 < r["writes_per_workflow"]["protools commits"] <= 3 for r in durable)
    assert all(r["writes_per_workflow"] == {} for r in report["rounds"] if r["target"] == "floor")
    assert report["checker"]["ok"] is True
    assert report["checker"]["workflows"] == 2 * (12 + 3)  # warm-up workflows are checked too
    assert set(report["memory_mb"]) >= {"protools-1", "generator-1", "mailer-1"}
    assert picture.read_bytes().startswith(b"\x89PNG")
    assert "x floor" in finished.stdout
    assert "invariants over 30 workflows: held" in finished.stdout
    assert "Traceback" not in finished.stderr


def test_bench_on_postgres_counts_what_each_workflow_writes_on_a_durable_cluster(
    tmp_path: Path,
) -> None:
    results = tmp_path / "bench.json"
    finished = bench(
        tmp_path, "-c", "1,4", "-n", "16", "--warmup", "2", "--postgres", "--json", str(results)
    )

    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(results.read_text())
    alone, together = (r["writes_per_workflow"] for r in report["rounds"])
    # Alone, each of the 3 use cases (accept, two outcomes) commits by itself.
    assert alone["protools commits"] == 3
    assert alone["use cases per commit"] == 1
    for writes in (alone, together):
        assert 1 <= writes["protools commits"] <= 3
        assert writes["WAL records"] > 10
        assert writes["WAL bytes"] > 1000
        # Flushes: the cluster is durable (fsync on). Statistics PostgreSQL reports late
        # (up to 10 s for an idle backend): read as they are, so only bounded here.
        assert 0 <= writes["WAL syncs"] <= 2 * writes["protools commits"] + 1
    # A durable cluster flushes: over the two rounds, some flushes were counted.
    assert alone["WAL syncs"] + together["WAL syncs"] > 0
    assert {"postgres", "postgres-services"} <= set(report["rounds"][0]["cpu_ms_per_workflow"])
    assert "WAL B/wf" in finished.stdout


def test_bench_keeps_consoles_following_the_live_log(tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    options = ["-c", "2", "-n", "10", "--warmup", "2", "--consoles", "3", "--no-check"]
    finished = bench(tmp_path, *options, "--json", str(results))

    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(results.read_text())
    assert report["config"]["consoles"] == 3
    # Each console followed from before the warm-up: every workflow's 4 events, live.
    assert report["console_events"] == [(10 + 2) * 4] * 3
    assert "3 consoles following the live log" in finished.stdout + finished.stderr


def test_bench_refuses_contradictory_options(tmp_path: Path) -> None:
    finished = bench(tmp_path, "--url", "http://127.0.0.1:9", "--floor")
    assert finished.returncode == 2
    assert "Traceback" not in finished.stderr


def test_bench_preloads_history_and_measures_again(tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    options = ["-c", "2", "-n", "10", "--warmup", "0", "--preload", "2500"]
    finished = bench(
        tmp_path, *options, "--data-dir", str(tmp_path / "stack"), "--json", str(results)
    )

    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(results.read_text())
    assert [(r["history"], r["count"]) for r in report["rounds"]] == [(0, 10), (2500, 10)]
    assert all(r["errors"] == {} for r in report["rounds"])
    assert report["checker"] == {**report["checker"], "ok": True, "workflows": 20}
    assert "preloaded 2,500 workflows in" in finished.stderr
    database = open_database(f"sqlite:///{tmp_path}/stack/protools.db", "protools", pool_size=1)
    try:
        with database.transaction(write=False) as tx:
            events = store.read_all(tx, limit=20_000)
    finally:
        database.close()
    assert len({event.stream_id for event in events}) == 2500 + 20
    assert sum(1 for event in events if event.type == "WorkflowCompleted") == 2500 + 20


def test_bench_open_loop_reports_goodput_shedding_a_timeline_and_checks(tmp_path: Path) -> None:
    results, picture = tmp_path / "open.json", tmp_path / "open.png"
    options = ["--open-loop", "--rate", "30", "--duration", "3", "--seed", "1", "--warmup", "5"]
    finished = bench(tmp_path, *options, "--json", str(results), "--plot", str(picture))

    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(results.read_text())
    summary = report["summary"]
    assert 45 <= summary["arrivals"] <= 135  # 90 expected: Poisson, seeded
    assert summary["errors"] == {}
    assert summary["outcomes"]["error"] == summary["outcomes"]["failed"] == 0
    assert summary["completed"] + summary["rejected"] + summary["pending"] == summary["arrivals"]
    assert summary["throughput"] > 0
    assert 0 < summary["goodput"] <= summary["throughput"]
    admitted = summary["admitted_latency"]
    assert 0 < admitted["p50_ms"] <= admitted["p95_ms"] <= admitted["p99_ms"] <= admitted["max_ms"]
    assert set(summary["rejection_latency"]) == {"p50_ms", "p95_ms", "p99_ms", "max_ms"}
    assert isinstance(summary["rejections_by_status"], dict)
    assert summary["rejections_without_retry_after"] >= 0
    assert [row["second"] for row in report["timeline"]] == [0, 1, 2]
    assert sum(row["arrivals"] for row in report["timeline"]) == summary["arrivals"]
    assert report["unsettled"] == 0
    assert report["checker"]["ok"] is True
    assert report["checker"]["workflows"] == 5 + summary["arrivals"] - summary["rejected"]
    assert picture.read_bytes().startswith(b"\x89PNG")
    assert "goodput" in finished.stdout
    assert f"invariants over {report['checker']['workflows']} workflows: held" in finished.stdout
    assert "Traceback" not in finished.stderr


@pytest.mark.parametrize(
    "options",
    [
        ["--rate", "30", "-c", "4"],  # a closed-loop option in an open loop
        ["--phases", "10x1", "--duration", "5"],
        ["--rate", "5", "--ramp", "1:5"],
        ["--open-loop"],  # no schedule
        ["--rate", "5", "--capacity"],
        ["--p99-bound-ms", "50"],  # a capacity option in a closed loop
        ["--phases", "10x1,oops"],
        ["--rate", "5", "--url", "http://192.0.2.1:8000", "--token", "t"],  # not loopback
    ],
)
def test_bench_refuses_open_loop_options_out_of_place(tmp_path: Path, options: list[str]) -> None:
    finished = bench(tmp_path, *options)
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert "Traceback" not in finished.stderr
