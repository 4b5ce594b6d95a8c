"""The figures of both sides, one line per measurement, with how Runyard compares."""

from __future__ import annotations

import argparse
from typing import Any

from bench.figures import quantile
from bench.tracking.mlflow_side import BATCH


def compare(runyard: float, other: float, higher_is_better: bool) -> str:
    """'runyard is 5.3x faster' (or slower) for two figures of the same kind."""
    if runyard <= 0 or other <= 0:
        return "n/a"
    ratio = (runyard / other) if higher_is_better else (other / runyard)
    if ratio >= 1:
        return f"runyard is {ratio:,.1f}x faster"
    return f"runyard is {1 / ratio:,.1f}x slower"


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
