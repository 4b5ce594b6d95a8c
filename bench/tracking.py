"""Metric logging benchmark: Runyard side by side with MLflow, in one run of this script.

    python -m bench.tracking [--points 100000] [--mlflow-sample 2000] [--live-points 500]

Starts a private Redis, the Runyard API, scheduler and one worker as real processes (local
executor, SQLite), and a local MLflow tracking server (SQLite backend), then measures:

(a) the cost of one logging call: Runyard ``run.log()`` inside a submitted run (writing to
    the real worker channel), MLflow ``log_metric`` synchronous and asynchronous;
(b) end-to-end durable throughput: from the first call until every point is in the
    database (Runyard: ``metric-names`` count; MLflow: ``log_batch`` of 1000, synchronous);
(c) the latency from ``run.log()`` to a Server-Sent Events subscriber.

MLflow is needed for its half only (``pip install mlflow``; not a project dependency):
without it, Runyard is measured alone. Not a test: it asserts nothing about speed. Every
process it starts is stopped at the end, on error too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from runyard.client import Client
from runyard.core import Environment, Experiment, ScriptRunConfig, Workspace
from tests.support.services import Stack, free_port, redis_server, wait_until

CLUSTER = "tracking"
METRIC = "x"
BATCH = 1000  # metrics per MLflow log_batch call (the server's limit)

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


def progress(message: str) -> None:
    """A line on stderr, so the report on stdout stays compact."""
    print(f"[bench.tracking] {message}", file=sys.stderr, flush=True)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def compare(runyard: float, other: float, higher_is_better: bool) -> str:
    """'runyard is 5.3x faster' (or slower) for two figures of the same kind."""
    if runyard <= 0 or other <= 0:
        return "n/a"
    ratio = (runyard / other) if higher_is_better else (other / runyard)
    if ratio >= 1:
        return f"runyard is {ratio:,.1f}x faster"
    return f"runyard is {1 / ratio:,.1f}x slower"


# --- Runyard -------------------------------------------------------------------------------


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
            lambda: (
                (r := self.client.get_run(run_id))["status"] in ("Completed", "Failed", "Canceled")
                and r
            ),
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
            if polls % 20 == 0 and self.client.get_run(run_id)["status"] in ("Failed", "Canceled"):
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


# --- MLflow --------------------------------------------------------------------------------


def mlflow_available() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """A local MLflow tracking server (SQLite backend) on a free port; stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--default-artifact-root",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    # MLflow 3 also starts a job runner (seven polling huey consumers) that metric logging
    # never uses; on a small machine it takes CPU from both sides of the comparison.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(folder / "server.log", "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited; see {folder / 'server.log'}")
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 180, 0.25, what="the MLflow server")
        yield url
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen, timeout: float = 20) -> None:  # type: ignore[type-arg]
    """SIGTERM the process group this process leads (its server workers too), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # workers may outlive the leader by a moment
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@dataclass
class MlflowBench:
    """MLflow's client in this process, against the local tracking server."""

    url: str
    database: Path

    def __post_init__(self) -> None:
        import mlflow

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        mlflow.set_tracking_uri(self.url)
        self.experiment_id = mlflow.set_experiment("runyard-bench").experiment_id

    def stored(self, run_id: str) -> int:
        """Points of the metric in the server's database."""
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
            return db.execute(
                "SELECT count(*) FROM metrics WHERE run_uuid = ? AND key = ?", (run_id, METRIC)
            ).fetchone()[0]

    def sync_cost(self, sample: int) -> dict[str, Any]:
        """``log_metric`` synchronous, each call timed (one HTTP request per call)."""
        import mlflow

        clock = time.perf_counter_ns
        durations: list[int] = []
        with quiet(), mlflow.start_run(run_name="log_metric sync") as run:
            for i in range(sample):
                t0 = clock()
                mlflow.log_metric(METRIC, float(i), step=i)
                durations.append(clock() - t0)
        return {**_summary(durations), "stored": self.stored(run.info.run_id)}

    def async_cost(self, points: int, buffer_seconds: int) -> dict[str, Any]:
        """``log_metric(synchronous=False)`` N times, then the final flush timed apart.

        With ``buffer_seconds`` (MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS) the queue merges
        what arrived meanwhile into batches of up to 1000; without it (MLflow's default) it
        sends one request per call."""
        import mlflow

        has_flag = "synchronous" in _parameters(mlflow.log_metric)
        clock = time.perf_counter_ns
        durations = [0] * points
        variable = "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"
        saved = os.environ.get(variable)
        if buffer_seconds > 0:
            os.environ[variable] = str(buffer_seconds)
        if not has_flag:
            mlflow.config.enable_async_logging(True)
        try:
            with quiet(), mlflow.start_run(run_name="log_metric async") as run:
                for i in range(points):
                    t0 = clock()
                    if has_flag:
                        mlflow.log_metric(METRIC, float(i), step=i, synchronous=False)
                    else:
                        mlflow.log_metric(METRIC, float(i), step=i)
                    durations[i] = clock() - t0
                t0 = clock()
                if hasattr(mlflow, "flush_async_logging"):
                    mlflow.flush_async_logging()
                flush_s = (clock() - t0) / 1e9
        finally:
            if not has_flag:
                mlflow.config.enable_async_logging(False)
            if saved is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = saved
        return {**_summary(durations), "flush_s": flush_s, "stored": self.stored(run.info.run_id)}

    def log_batch(self, points: int) -> dict[str, Any]:
        """``MlflowClient.log_batch`` of 1000 metrics per call; durable when it returns."""
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.url)
        run_id = client.create_run(self.experiment_id, run_name="log_batch").info.run_id
        started = time.time()
        for start in range(0, points, BATCH):
            stamp = int(time.time() * 1000)
            metrics = [
                Metric(METRIC, float(i), stamp, i) for i in range(start, min(points, start + BATCH))
            ]
            client.log_batch(run_id, metrics=metrics)
        elapsed = time.time() - started
        with quiet():
            client.set_terminated(run_id)
        return {"elapsed_s": elapsed, "rate": points / elapsed, "stored": self.stored(run_id)}


def quiet() -> contextlib.AbstractContextManager[Any]:
    """Swallow MLflow's 'View run at' lines on stdout."""
    return contextlib.redirect_stdout(io.StringIO())


def _summary(durations: list[int]) -> dict[str, float]:
    n = len(durations)
    ordered = sorted(durations)
    return {
        "mean_us": sum(durations) / n / 1000,
        "p50_us": ordered[n // 2] / 1000,
        "p95_us": ordered[min(int(0.95 * n), n - 1)] / 1000,
        "total_s": sum(durations) / 1e9,
        "calls": n,
    }


def _parameters(function: Any) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()


# --- the report ----------------------------------------------------------------------------


def report(args: argparse.Namespace, results: dict[str, Any]) -> list[str]:
    n = args.points
    cost, tput, live = results["cost"], results["throughput"], results["live"]
    pad = " " * 16
    lines = [f"points: {n:,}"]
    lines.append(
        f"(a) call cost   runyard run.log: mean {cost['mean_us']:.2f} us  "
        f"p50 {cost['p50_us']:.2f} us  p95 {cost['p95_us']:.2f} us  total {cost['total_s']:.3f} s"
        f"   (p99 {cost['p99_us']:.1f} us, max {cost['max_us'] / 1000:.1f} ms, "
        f"timer {cost['clock_us']:.2f} us/call included)"
    )
    sync, asyn, batch = results.get("sync"), results.get("async"), results.get("batch")
    if sync is not None:
        total = sync["mean_us"] * n / 1e6
        lines.append(
            f"{pad}mlflow log_metric sync: mean {sync['mean_us']:,.0f} us  "
            f"p95 {sync['p95_us']:,.0f} us ({sync['calls']:,}-call sample; "
            f"{n:,} calls ~ {total:,.0f} s extrapolated)"
            f"  -> {compare(cost['mean_us'], sync['mean_us'], False)}"
        )
    if asyn is not None:
        buffering = (
            f"buffered {args.mlflow_async_buffer} s"
            if args.mlflow_async_buffer > 0
            else "unbuffered (MLflow default)"
        )
        lines.append(
            f"{pad}mlflow log_metric async: mean {asyn['mean_us']:,.1f} us  "
            f"p95 {asyn['p95_us']:,.1f} us  total {asyn['total_s']:.2f} s, "
            f"then flush {asyn['flush_s']:.1f} s ({buffering})"
            f"  -> {compare(cost['mean_us'], asyn['mean_us'], False)}"
        )
    line = f"(b) end to end  runyard: {tput['rate']:,.0f} points/s durable"
    if batch is not None:
        line += (
            f"   mlflow log_batch({BATCH}): {batch['rate']:,.0f} points/s"
            f"  -> {compare(tput['rate'], batch['rate'], True)}"
        )
    lines.append(line)
    lines.append(
        f"{pad}runyard timeline: loop done +{tput['loop_done'] - tput['first']:.2f} s, "
        f"in the channel +{tput['flushed'] - tput['first']:.2f} s, "
        f"all {n:,} in the database +{tput['elapsed_s']:.2f} s"
    )
    latencies = [x * 1000 for x in live["latencies"]]
    if latencies:
        lines.append(
            f"(c) live        run.log -> SSE subscriber: p50 {quantile(latencies, 0.5):.0f} ms  "
            f"p95 {quantile(latencies, 0.95):.0f} ms  max {max(latencies):.0f} ms  "
            f"({len(latencies)}/{live['expected']} points received)"
        )
    else:
        lines.append("(c) live        no point reached the SSE subscriber")
    if not args.have_mlflow:
        lines.append("mlflow: not installed (pip install mlflow); Runyard measured alone")
    checks = [("runyard throughput run", tput["stored"], n)]
    if sync is not None:
        checks.append(("mlflow sync run", sync["stored"], sync["calls"]))
    if asyn is not None:
        checks.append(("mlflow async run", asyn["stored"], n))
    if batch is not None:
        checks.append(("mlflow log_batch run", batch["stored"], n))
    for what, stored, expected in checks:
        if stored != expected:
            lines.append(f"warning: {what} stored {stored:,} of {expected:,} points")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=100_000, help="points per measurement")
    parser.add_argument(
        "--mlflow-sample", type=int, default=2_000, help="synchronous log_metric calls timed"
    )
    parser.add_argument(
        "--mlflow-async-buffer",
        type=int,
        default=1,
        help="MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS for async logging (0: MLflow's default, "
        "one request per call)",
    )
    parser.add_argument("--live-points", type=int, default=500, help="points for (c)")
    args = parser.parse_args()
    if args.points < 1 or args.mlflow_sample < 1 or args.live_points < 1:
        parser.error("--points, --mlflow-sample and --live-points must be at least 1")
    args.have_mlflow = mlflow_available()
    if not args.have_mlflow:
        print("mlflow is not importable (pip install mlflow): measuring Runyard alone", flush=True)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as cleanup:
        root = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="runyard-bench-")))
        folder = root / "src"
        folder.mkdir()
        (folder / "track.py").write_text(RUN_SCRIPT)
        mlflow_url = None
        if args.have_mlflow:
            progress("starting the MLflow server")
            mlflow_url = cleanup.enter_context(mlflow_server(root / "mlflow"))
        progress("starting Redis, the Runyard API, scheduler and a worker")
        redis = cleanup.enter_context(redis_server(root / "redis"))
        stack = Stack(root=root / "stack", redis=redis)
        cleanup.callback(stack.stop)
        stack.start()
        stack.client().create_cluster(CLUSTER, nodes=1)
        stack.start_worker(CLUSTER, slots=1, name="tracking-worker")

        bench = RunyardBench(stack, folder)
        progress(f"runyard: run.log() cost, {args.points:,} calls in a submitted run")
        results["cost"] = bench.call_cost(args.points)
        progress(f"runyard: end-to-end throughput, {args.points:,} points")
        results["throughput"] = bench.throughput(args.points)
        progress(f"runyard: run.log() -> SSE latency, {args.live_points} points 10 ms apart")
        results["live"] = bench.live(args.live_points)

        if mlflow_url is not None:
            mlflow = MlflowBench(mlflow_url, root / "mlflow" / "mlflow.db")
            progress(f"mlflow: log_metric sync, {args.mlflow_sample:,}-call sample")
            results["sync"] = mlflow.sync_cost(args.mlflow_sample)
            progress(f"mlflow: log_metric async, {args.points:,} calls + flush")
            results["async"] = mlflow.async_cost(args.points, args.mlflow_async_buffer)
            progress(f"mlflow: log_batch({BATCH}), {args.points:,} points")
            results["batch"] = mlflow.log_batch(args.points)
        progress("stopping every service")
    print("\n".join(report(args, results)), flush=True)


if __name__ == "__main__":
    main()
