"""``python -m bench.tracking``: the arguments, the services, the order of measurements."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import tracking
from bench.tracking.mlflow_side import BATCH, MlflowBench, mlflow_available, mlflow_server
from bench.tracking.report import report
from bench.tracking.runyard_side import CLUSTER, RUN_SCRIPT, RunyardBench
from tests.support.services import Stack, redis_server


def progress(message: str) -> None:
    """A line on stderr, so the report on stdout stays compact."""
    print(f"[bench.tracking] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tracking", description=tracking.__doc__)
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
