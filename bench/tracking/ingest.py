"""Durable ingest measured the issue's way, Runyard beside MLflow in one invocation.

    python -m bench.tracking.ingest [--points 100000] [--concurrency 1,10,50]
        [--concurrent-points 200000] [--buffer-points 10000000] [--no-postgres]

(a) One interactive run: ``Experiment.start_logging()`` -> N x ``run.log()`` ->
    ``run.complete()`` -> ``run.get_metrics()`` reads every point back; points/s over the
    whole of it. MLflow the same way against its server on SQLite: ``create_run`` ->
    ``log_batch`` of 1000 -> ``set_terminated`` -> ``get_metric_history``.
(b) 1, 10 and 50 runs logging at once (one process each, released together), the same
    steps each; aggregate points/s from the release until the last read-back, on SQLite and
    on PostgreSQL.
(c) One run logging 10 million points: the logging process's peak RSS and the most events
    its SDK buffer held at once (sampled every 10 ms).

Not a test: it asserts nothing about speed; a read-back short of what was logged is
reported. Every process it starts is stopped at the end, on error too.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.tracking import METRIC
from bench.tracking.mlflow_side import BATCH, mlflow_available, mlflow_server, quiet
from tests.support.services import Stack, postgres_server, redis_server

EXPERIMENT = "ingest-bench"
# A figure: (name, value, unit, anchor). The anchor says what to read it against (MLflow,
# the goal, the figure before) or is "" where there is none.
Row = tuple[str, float, str, str]


def progress(message: str) -> None:
    print(f"[bench.tracking.ingest] {message}", file=sys.stderr, flush=True)


# --- Runyard: one interactive run --------------------------------------------------------------


def runyard_run(url: str, points: int, outputs: str, ready: Any = None, go: Any = None) -> dict:
    """``start_logging`` -> ``points`` x ``log`` -> ``complete`` -> ``get_metrics``; the
    clock starts at ``start_logging`` (or, with ``go``, when every run is released)."""
    from runyard.core import Experiment, Workspace

    experiment = Experiment(Workspace(url=url), EXPERIMENT)
    started = time.time()
    run = experiment.start_logging(outputs=outputs)
    if go is not None:
        ready.set()
        go.wait()
        started = time.time()
    log = run.log
    for i in range(points):
        log(METRIC, float(i))
    logged = time.time()
    run.complete()
    completed = time.time()
    values = run.get_metrics(name=METRIC).get(METRIC, [])
    read = time.time()
    count = len(values) if isinstance(values, list) else 1
    progress(
        f"  {points:,} pts: logged +{logged - started:.2f} s, complete() +{completed - started:.2f}"
        f" s, read back +{read - started:.2f} s"
    )
    return {
        "run_id": run.id,
        "started": started,
        "logged": logged,
        "completed": completed,
        "read": read,
        "stored": count,
        "rate": points / (read - started),
    }


def _child(
    url: str, token: str, points: int, outputs: str, ready: Any, go: Any, results: Any
) -> None:
    # A spawned process imports tests.support.services afresh, which draws a new token.
    os.environ["RUNYARD_TOKEN"] = token
    try:
        results.put(runyard_run(url, points, outputs, ready, go))
    except BaseException as exc:  # reported by the parent
        results.put({"error": repr(exc)})
        ready.set()


def concurrent(url: str, runs: int, total: int, folder: Path) -> dict:
    """``runs`` processes each log ``total // runs`` points at once; aggregate points/s from
    their release to the last read-back."""
    context = multiprocessing.get_context("spawn")
    per_run = max(total // runs, 1)
    go, results = context.Event(), context.Queue()
    readies, processes = [], []
    for n in range(runs):
        ready = context.Event()
        outputs = str(folder / f"c{runs}-{n}")
        process = context.Process(
            target=_child,
            args=(url, os.environ["RUNYARD_TOKEN"], per_run, outputs, ready, go, results),
            daemon=True,
        )
        process.start()
        readies.append(ready)
        processes.append(process)
    try:
        for ready in readies:
            if not ready.wait(300):
                raise RuntimeError("a logging process never started its run")
        go.set()
        found = [results.get(timeout=1800) for _ in processes]
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()
    errors = [r["error"] for r in found if "error" in r]
    if errors:
        raise RuntimeError(f"{len(errors)} logging process(es) failed: {errors[0]}")
    started = min(r["started"] for r in found)
    ended = max(r["read"] for r in found)
    stored = sum(r["stored"] for r in found)
    return {
        "runs": runs,
        "points": per_run * runs,
        "stored": stored,
        "elapsed_s": ended - started,
        "rate": per_run * runs / (ended - started),
    }


# --- the SDK buffer of a run logging millions of points ----------------------------------------

BUFFER_SCRIPT = """\
import json, resource, sys, threading, time
from runyard.core import Experiment, Workspace

url, points, outputs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
run = Experiment(Workspace(url=url), "ingest-bench").start_logging(outputs=outputs)
sink = run._sink
peak = [0]
done = threading.Event()

def watch():
    while not done.wait(0.01):
        peak[0] = max(peak[0], sink.buffered() if hasattr(sink, 'buffered') else len(sink._buffer))

threading.Thread(target=watch, daemon=True).start()
started = time.time()
log = run.log
for i in range(points):
    log("x", float(i))
logged = time.time()
run.complete()
done.set()
completed = time.time()
count = run._client.metric_names(run.id)[0]["count"]
print(json.dumps({
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_buffered": peak[0], "logged_s": logged - started,
    "completed_s": completed - started, "stored": count,
}), flush=True)
"""


def buffer_bound(url: str, points: int, folder: Path) -> dict:
    """A process logging ``points`` points through ``start_logging``: its peak RSS and the
    most events its SDK buffer held at once."""
    import json
    import subprocess

    script = folder / "buffer.py"
    script.write_text(BUFFER_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), url, str(points), str(folder / "buffer-outputs")],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the buffer run failed:\n{done.stderr[-2000:]}")
    return {**json.loads(lines[-1]), "points": points}


# --- MLflow the same way -----------------------------------------------------------------------


def mlflow_run(url: str, points: int) -> dict:
    """``create_run`` -> ``log_batch`` of 1000 -> ``set_terminated`` -> read back."""
    import logging

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    started = time.time()
    run_id = client.create_run(experiment_id, run_name="ingest").info.run_id
    for start in range(0, points, BATCH):
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(METRIC, float(i), stamp, i) for i in range(start, min(points, start + BATCH))
        ]
        client.log_batch(run_id, metrics=metrics)
    with quiet():
        client.set_terminated(run_id)
    completed = time.time()
    stored = len(client.get_metric_history(run_id, METRIC))
    read = time.time()
    return {
        "started": started,
        "completed": completed,
        "read": read,
        "stored": stored,
        "rate": points / (read - started),
    }


# --- the stacks ---------------------------------------------------------------------------------


@dataclass
class Figures:
    """Everything measured, as the table's rows."""

    rows: list[Row] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, anchor: str = "") -> None:
        self.rows.append((name, value, unit, anchor))

    def check(self, what: str, stored: int, expected: int) -> None:
        if stored != expected:
            self.warnings.append(f"{what}: read back {stored:,} of {expected:,} points")


@contextlib.contextmanager
def runyard_stack(root: Path, database_url: str = "") -> Iterator[str]:
    """Redis, the API and a scheduler (no worker: interactive runs need none)."""
    with redis_server(root / "redis") as redis:
        stack = Stack(root=root / "stack", redis=redis, database_url=database_url)
        try:
            stack.start()
            yield stack.url
        finally:
            stack.stop()


def measure(
    points: int = 100_000,
    concurrency: tuple[int, ...] = (1, 10, 50),
    concurrent_points: int = 200_000,
    buffer_points: int = 10_000_000,
    postgres: bool = True,
    with_mlflow: bool = True,
) -> Figures:
    """Run every measurement; the figures as rows."""
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="runyard-ingest-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # the PostgreSQL server (user postgres) reaches its folder
        mlflow_rate = 0.0
        if with_mlflow and mlflow_available():
            progress("starting the MLflow server (SQLite)")
            with mlflow_server(root / "mlflow") as mlflow_url:
                progress(f"mlflow: {points:,} points, log_batch({BATCH}) -> read back")
                result = mlflow_run(mlflow_url, points)
            mlflow_rate = result["rate"]
            figures.check("mlflow", result["stored"], points)
            figures.add(
                f"ingest mlflow log_batch({BATCH}) {points:,} pts -> read back",
                round(mlflow_rate),
                "points/s",
            )
        elif with_mlflow:
            figures.warnings.append("mlflow is not importable (pip install mlflow)")
        databases: list[tuple[str, str]] = [("sqlite", "")]
        with contextlib.ExitStack() as pg:
            if postgres:
                pg_root = Path(tempfile.mkdtemp(prefix="runyard-ingest-pg-"))
                pg.callback(_remove, pg_root)
                os.chmod(pg_root, 0o755)
                progress("starting PostgreSQL")
                databases.append(("postgresql", pg.enter_context(postgres_server(pg_root))))
            for label, url in databases:
                progress(f"starting Redis, the Runyard API and scheduler ({label})")
                with runyard_stack(root / label, url) as api:
                    _measure_stack(figures, api, label, root, points, concurrency,
                                   concurrent_points, mlflow_rate)  # fmt: skip
                    if label == "sqlite" and buffer_points:
                        progress(f"runyard: SDK buffer, {buffer_points:,} points in one run")
                        found = buffer_bound(api, buffer_points, root)
                        figures.check("buffer run", found["stored"], buffer_points)
                        figures.add(
                            f"SDK peak RSS, one run logging {buffer_points:,} pts",
                            round(found["peak_rss_mb"]),
                            "MB",
                        )
                        figures.add(
                            f"SDK buffer peak, one run logging {buffer_points:,} pts",
                            found["peak_buffered"],
                            "events",
                        )
                        figures.add(
                            f"ingest {buffer_points:,} pts one run, log -> complete()",
                            round(buffer_points / found["completed_s"]),
                            "points/s",
                        )
    return figures


def _measure_stack(
    figures: Figures,
    api: str,
    label: str,
    root: Path,
    points: int,
    concurrency: tuple[int, ...],
    concurrent_points: int,
    mlflow_rate: float,
) -> None:
    progress(f"runyard ({label}): {points:,} points, start_logging -> complete -> read back")
    runyard_run(api, 1000, str(root / "warm"))  # first requests warm the API's imports
    single = runyard_run(api, points, str(root / f"{label}-single"))
    figures.check(f"runyard {label}", single["stored"], points)
    anchor = ""
    if mlflow_rate:
        anchor = f"{single['rate'] / mlflow_rate:.1f}x mlflow log_batch (goal >= 10x)"
    figures.add(
        f"ingest runyard {label} {points:,} pts start_logging -> read back",
        round(single["rate"]),
        "points/s",
        anchor,
    )
    for runs in concurrency:
        progress(f"runyard ({label}): {runs} runs at once, {concurrent_points:,} points")
        found = concurrent(api, runs, concurrent_points, root / f"{label}-c")
        figures.check(f"runyard {label} x{runs}", found["stored"], found["points"])
        figures.add(
            f"ingest runyard {label} {runs} runs at once, aggregate",
            round(found["rate"]),
            "points/s",
            "goal >= 100,000 on SQLite" if label == "sqlite" else "",
        )


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def table(figures: Figures) -> list[str]:
    width = max((len(r[0]) for r in figures.rows), default=10)
    lines = [f"{'figure':<{width}}  {'value':>12}  unit      anchor"]
    for name, value, unit, anchor in figures.rows:
        lines.append(f"{name:<{width}}  {value:>12,.0f}  {unit:<8}  {anchor}")
    lines += [f"warning: {w}" for w in figures.warnings]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tracking.ingest", description=__doc__)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--concurrency", default="1,10,50", help="runs at once, comma separated")
    parser.add_argument("--concurrent-points", type=int, default=200_000, help="total, all runs")
    parser.add_argument("--buffer-points", type=int, default=10_000_000, help="0: skip (c)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args()
    try:
        concurrency = tuple(int(n) for n in args.concurrency.split(",") if n.strip())
    except ValueError:
        parser.error("--concurrency takes whole numbers, e.g. 1,10,50")
    if args.points < 1 or any(n < 1 for n in concurrency) or args.buffer_points < 0:
        parser.error("--points and --concurrency must be at least 1")
    started = time.time()
    load = os.getloadavg()
    figures = measure(
        args.points,
        concurrency,
        args.concurrent_points,
        args.buffer_points,
        postgres=not args.no_postgres,
        with_mlflow=not args.no_mlflow,
    )
    end_load = os.getloadavg()
    print("\n".join(table(figures)))
    print(
        f"load average (1 min) {load[0]:.2f} at the start, {end_load[0]:.2f} at the end; "
        f"{os.cpu_count()} cores; {time.time() - started:.0f} s in all; peak RSS of this "
        f"process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()
