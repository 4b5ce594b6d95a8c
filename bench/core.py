"""Core benchmarks (issue 2): submit → Running latency and queue throughput.

    python -m bench.core [--latency-runs 40] [--throughput-runs 1000]

Starts a private Redis, the API, the scheduler and workers as real processes (local
executor, SQLite), prints the figures, and stops everything it started. Not a test: it
asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.figures import Figure, quantile
from runyard.client import Client
from runyard.core import Environment, Experiment, ScriptRunConfig, Workspace
from runyard.status import TERMINAL
from tests.support.services import Stack, redis_server, stop_process, wait_until


def config(folder: Path, cluster: str) -> ScriptRunConfig:
    env = Environment("bench")
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = sys.executable
    return ScriptRunConfig(
        source_directory=folder, script="noop.py", compute_target=cluster, environment=env
    )


def wait_terminal(client: Client, run_id: str) -> dict:
    return wait_until(  # type: ignore[return-value]
        lambda: (r := client.get_run(run_id))["status"] in TERMINAL and r,
        120,
        0.01,
        what=run_id,
    )


def submit_to_running(stack: Stack, folder: Path, runs: int) -> list[float]:
    """Seconds from the start of Experiment.submit() to the worker reporting Running."""
    client = stack.client()
    client.create_cluster("latency", nodes=1)
    worker = stack.start_worker("latency", slots=1, name="latency-worker")
    experiment = Experiment(Workspace(url=stack.url), "latency")
    cfg = config(folder, "latency")
    experiment.submit(cfg)  # warm the snapshot cache and the interpreter's page cache
    latencies = []
    for _ in range(runs):
        started = time.time()
        run = experiment.submit(cfg)
        record = wait_terminal(client, run.id)
        assert record["status"] == "Completed", record
        latencies.append(datetime.fromisoformat(record["running_at"]).timestamp() - started)
    stop_process(worker)
    return latencies


def throughput(stack: Stack, folder: Path, runs: int) -> tuple[float, float]:
    """Runs completed per second with `runs` queued on 2 workers x 2 slots."""
    client = stack.client()
    client.create_cluster("throughput", nodes=4)
    experiment = Experiment(Workspace(url=stack.url), "throughput")
    cfg = config(folder, "throughput")
    submit_started = time.monotonic()
    ids = [experiment.submit(cfg).id for _ in range(runs)]
    submit_rate = runs / (time.monotonic() - submit_started)
    started = time.monotonic()
    workers = [
        stack.start_worker("throughput", slots=2, name=f"tp-{i}", wait=False) for i in range(2)
    ]

    def all_done() -> bool:
        finished = client.list_runs(experiment="throughput", status=["Completed"], limit=1)
        return len(finished) > 0 and _count(client, "Completed") == runs

    wait_until(all_done, 3600, 0.25, what="the queue to drain")
    elapsed = time.monotonic() - started
    failed = _count(client, "Failed")
    for worker in workers:
        stop_process(worker)
    assert failed == 0 and len(ids) == runs
    return runs / elapsed, submit_rate


def _count(client: Client, status: str) -> int:
    return client.count_runs(experiment="throughput", status=status)


def measure(latency_runs: int, throughput_runs: int) -> tuple[list[float], float, float]:
    """(submit -> Running latencies in seconds, runs/s drained, runs/s submitted)."""
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmp:
        root = Path(tmp)
        folder = root / "src"
        folder.mkdir()
        (folder / "noop.py").write_text("print('ok')\n")
        with redis_server(root / "redis") as redis:
            stack = Stack(root=root / "stack", redis=redis)
            stack.start()
            try:
                latencies = submit_to_running(stack, folder, latency_runs)
                rate, submit_rate = throughput(stack, folder, throughput_runs)
            finally:
                stack.stop()
    return latencies, rate, submit_rate


def figures(quick: bool = False) -> list[Figure]:
    """Rows for ``python -m bench``."""
    latency_runs, throughput_runs = (10, 100) if quick else (40, 1000)
    latencies, rate, submit_rate = measure(latency_runs, throughput_runs)
    note = f"local executor, idle cluster, {len(latencies)} runs"
    return [
        Figure("submit -> Running p50", quantile(latencies, 0.5) * 1000, "ms", note=note),
        Figure("submit -> Running p95", quantile(latencies, 0.95) * 1000, "ms", note=note),
        Figure(
            "queue throughput, 2 workers x 2 slots",
            rate,
            "runs/s",
            note=f"{throughput_runs} trivial runs queued; submitted at {submit_rate:.1f} runs/s",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-runs", type=int, default=40)
    parser.add_argument("--throughput-runs", type=int, default=1000)
    args = parser.parse_args()
    latencies, rate, submit_rate = measure(args.latency_runs, args.throughput_runs)
    print(f"submit -> Running, local executor, idle cluster ({len(latencies)} runs):")
    print(f"  p50 {quantile(latencies, 0.50) * 1000:7.1f} ms")
    print(f"  p95 {quantile(latencies, 0.95) * 1000:7.1f} ms")
    print(f"  mean {statistics.mean(latencies) * 1000:6.1f} ms")
    print(
        f"throughput, {args.throughput_runs} queued trivial runs, 2 workers x 2 "
        f"slots: {rate:.1f} runs/s (submitted at {submit_rate:.1f} runs/s)"
    )


if __name__ == "__main__":
    main()
