"""Runyard's half of the benchmark: a script submitted as real runs to a live stack, timing
``run.log()`` from inside the run, and the API read back for what reached the database."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.tracking import METRIC
from runyard.client import Client
from runyard.core import Environment, Experiment, ScriptRunConfig, Workspace
from runyard.status import TERMINAL, UNSUCCESSFUL
from tests.support.services import Stack, wait_until

CLUSTER = "tracking"

# The script the submitted Runyard runs execute. It prints one JSON line of results.
RUN_SCRIPT = '''\
import json
import os
import sys
import time

from runyard.core import Run


def cost(n):
    """Each run.log() call timed on its own, with the clock's own cost measured apart."""
    run = Run.get_context()
    log, clock = run.log, time.perf_counter_ns
    overhead = []
    for _ in range(10000):
        t0 = clock()
        overhead.append(clock() - t0)
    durations = [0] * n
    loop_started = clock()
    for i in range(n):
        t0 = clock()
        log("x", float(i))
        durations[i] = clock() - t0
    loop_ns = clock() - loop_started
    t0 = clock()
    run.flush()
    flush_ns = clock() - t0
    ordered = sorted(durations)
    print(json.dumps({
        "mean_us": sum(durations) / n / 1000,
        "p50_us": ordered[n // 2] / 1000,
        "p95_us": ordered[min(int(0.95 * n), n - 1)] / 1000,
        "p99_us": ordered[min(int(0.99 * n), n - 1)] / 1000,
        "max_us": ordered[-1] / 1000,
        "total_s": sum(durations) / 1e9,
        "loop_s": loop_ns / 1e9,
        "flush_s": flush_ns / 1e9,
        "clock_us": sorted(overhead)[len(overhead) // 2] / 1000,
    }), flush=True)


def throughput(n):
    """N points as fast as possible; the benchmark watches the database fill up."""
    run = Run.get_context()
    log = run.log
    first = time.time()
    for i in range(n):
        log("x", float(i))
    loop_done = time.time()
    run.flush()
    print(json.dumps({"first": first, "loop_done": loop_done, "flushed": time.time()}),
          flush=True)


def live(n, flag):
    """Once the subscriber is listening (the flag file), n points 10 ms apart whose value
    is the wall clock at the call."""
    run = Run.get_context()
    deadline = time.time() + 120
    while not os.path.exists(flag):
        if time.time() > deadline:
            sys.exit("the subscriber never raised its flag")
        time.sleep(0.01)
    for _ in range(n):
        run.log("x", time.time())
        time.sleep(0.01)
    run.flush()
    time.sleep(2.0)  # the stream closes at the run's end: let the last batch reach it
    print(json.dumps({"logged": n}), flush=True)


mode = sys.argv[1]
if mode == "cost":
    cost(int(sys.argv[2]))
elif mode == "throughput":
    throughput(int(sys.argv[2]))
else:
    live(int(sys.argv[2]), sys.argv[3])
'''


@dataclass
class RunyardBench:
    """Submits the run script to a live stack and reads back what it measured."""

    stack: Stack
    folder: Path

    def __post_init__(self) -> None:
        self.client = self.stack.client()
        self.experiment = Experiment(Workspace(url=self.stack.url), "tracking-bench")

    def submit(self, *arguments: str) -> str:
        env = Environment("bench")
        env.python.user_managed_dependencies = True
        env.python.interpreter_path = sys.executable
        config = ScriptRunConfig(
            source_directory=self.folder,
            script="track.py",
            arguments=list(arguments),
            compute_target=CLUSTER,
            environment=env,
        )
        return self.experiment.submit(config).id

    def finish(self, run_id: str, timeout: float) -> dict[str, Any]:
        """Wait for the run to end; its last JSON line of output."""
        record = wait_until(
            lambda: (r := self.client.get_run(run_id))["status"] in TERMINAL and r,
            timeout,
            0.05,
            what=f"run {run_id} to end",
        )
        logs = self.client.logs(run_id)
        if record["status"] != "Completed":  # type: ignore[index]
            raise RuntimeError(f"run {run_id} ended {record['status']}:\n{logs[-2000:]}")  # type: ignore[index]
        for line in reversed(logs.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"run {run_id} printed no result:\n{logs[-2000:]}")

    def stored(self, run_id: str) -> int:
        """Points of the metric in the database."""
        names = self.client.metric_names(run_id)
        return next((m["count"] for m in names if m["name"] == METRIC), 0)

    def call_cost(self, points: int) -> dict[str, Any]:
        run_id = self.submit("cost", str(points))
        return self.finish(run_id, 300 + points / 1000)

    def throughput(self, points: int) -> dict[str, Any]:
        """Points per second from the first call until all are in the database."""
        run_id = self.submit("throughput", str(points))
        timeout = 600 + points / 500
        polls = 0

        def all_stored() -> bool:
            nonlocal polls
            if self.stored(run_id) >= points:
                return True
            polls += 1
            if polls % 20 == 0 and self.client.get_run(run_id)["status"] in UNSUCCESSFUL:
                self.finish(run_id, 10)  # raises with the run's log
            return False

        wait_until(all_stored, timeout, 0.05, what="the points")
        durable = time.time()
        result = self.finish(run_id, timeout)
        elapsed = durable - result["first"]
        return {
            **result,
            "durable": durable,
            "elapsed_s": elapsed,
            "rate": points / elapsed,
            "stored": self.stored(run_id),
        }

    def live(self, points: int) -> dict[str, Any]:
        """Latency of each point from run.log() to an SSE subscriber of the run's events."""
        flag = self.folder.parent / f"live-{time.monotonic_ns()}.flag"
        run_id = self.submit("live", str(points), str(flag))
        latencies: list[float] = []
        connected = threading.Event()
        errors: list[BaseException] = []

        def subscribe() -> None:
            try:
                for event, data in Client(self.stack.url).events(run_id):
                    connected.set()
                    if event != "metrics":
                        continue
                    now = time.time()
                    for item in data.get("events", []):
                        if item.get("k") == "m" and item.get("n") == METRIC:
                            latencies.append(now - float(item["v"]))
            except BaseException as exc:  # reported by the caller
                errors.append(exc)
                connected.set()

        thread = threading.Thread(target=subscribe, name="sse-subscriber", daemon=True)
        thread.start()
        if not connected.wait(30):
            raise RuntimeError("the SSE subscription never answered")
        time.sleep(0.5)  # the stream's start position is taken just after its first event
        flag.touch()
        self.finish(run_id, 300 + points * 0.05)
        thread.join(30)
        if errors:
            raise RuntimeError(f"the SSE subscriber failed: {errors[0]!r}")
        return {"latencies": latencies, "expected": points}
