"""MLflow's half of the benchmark: a local tracking server (SQLite backend) and MLflow's
client in this process, measured the ways MLflow offers (sync, async, log_batch). MLflow is
imported only here, so the benchmark runs without it."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.tracking import METRIC
from tests.support.services import free_port, wait_until

BATCH = 1000  # metrics per MLflow log_batch call (the server's limit)


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
