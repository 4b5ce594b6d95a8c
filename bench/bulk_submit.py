"""Bulk submit (issue 16, item 6): a 5,000-run job array in one request, against 5,000
single submits.

    python -m bench.bulk_submit [--runs 5000] [--singles 200]

Starts a private Redis, the API and the scheduler as real processes (SQLite, no workers:
only submission is timed), with the per-token submission limit raised so the singles are
not held back by it. Times ``Experiment.submit_array`` (pack, one upload, one request) and
``Experiment.submit`` ``--singles`` times (extrapolated to ``--runs``), and prints how long
the same sweep takes under the default limit of 120 submissions a minute. Not a test: it
asserts nothing about speed; ``figures()`` gives the rows ``python -m bench`` tabulates.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from runyard.core import Environment, Experiment, ScriptRunConfig, Workspace
from tests.support.services import Stack, redis_server

DEFAULT_LIMIT_PER_MINUTE = 120  # protocol/settings.py submit_rate_limit


def config(folder: Path, cluster: str) -> ScriptRunConfig:
    env = Environment("bench")
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = sys.executable
    return ScriptRunConfig(
        source_directory=folder, script="noop.py", compute_target=cluster, environment=env
    )


def measure(runs: int, singles: int) -> dict[str, float]:
    """Seconds for one array of ``runs``, and per single submit (mean of ``singles``)."""
    with tempfile.TemporaryDirectory(prefix="runyard-bench-bulk-") as tmp:
        root = Path(tmp)
        folder = root / "src"
        folder.mkdir()
        (folder / "noop.py").write_text("print('ok')\n")
        with redis_server(root / "redis") as redis:
            stack = Stack(
                root=root / "stack",
                redis=redis,
                extra_env={"RUNYARD_SUBMIT_RATE_LIMIT": "1000000/minute"},
            )
            stack.start()
            try:
                stack.client().create_cluster("bulk", nodes=1)
                workspace = Workspace(url=stack.url)
                workspace._client = stack.client()
                cfg = config(folder, "bulk")
                Experiment(workspace, "warm").submit(cfg)  # the snapshot is stored once
                arguments = [["--seed", str(i)] for i in range(runs)]
                started = time.perf_counter()
                array = Experiment(workspace, "array").submit_array(cfg, arguments)
                array_seconds = time.perf_counter() - started
                assert len(array) == runs
                assert stack.client().count_runs(experiment="array") == runs
                single = Experiment(workspace, "singles")
                started = time.perf_counter()
                for i in range(singles):
                    cfg.arguments = ["--seed", str(i)]
                    single.submit(cfg)
                single_seconds = (time.perf_counter() - started) / singles
            finally:
                stack.stop()
    return {"array": array_seconds, "single": single_seconds}


def rows(runs: int, singles: int) -> list[dict[str, Any]]:
    timed = measure(runs, singles)
    extrapolated = timed["single"] * runs
    limited = runs / DEFAULT_LIMIT_PER_MINUTE * 60
    load = os.getloadavg()[0]
    return [
        {
            "name": f"bulk submit: {runs:,} runs in one request (SQLite)",
            "value": timed["array"],
            "unit": "s",
            "anchor": f"{runs:,} single submits",
            "anchor_value": extrapolated,
            "goal": "<= 5",
            "note": f"SDK submit_array end to end; singles extrapolated from {singles} "
            f"(limit raised); load {load:.1f}",
        },
        {
            "name": "bulk submit: runs queued per second in one array",
            "value": runs / timed["array"],
            "unit": "runs/s",
            "anchor": "single submits",
            "anchor_value": 1 / timed["single"],
            "note": f"{runs:,}-run array vs {singles} Experiment.submit calls",
        },
        {
            "name": f"bulk submit: {runs:,} single submits under the default limit",
            "value": max(limited, extrapolated),
            "unit": "s",
            "note": f"{DEFAULT_LIMIT_PER_MINUTE} submissions a minute per token bind first",
        },
    ]


def figures(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for ``python -m bench`` (name, value, unit, anchor, anchor_value, goal, note)."""
    return rows(1000, 50) if quick else rows(5000, 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--singles", type=int, default=200)
    args = parser.parse_args()
    for row in rows(args.runs, args.singles):
        anchor = (
            f"  ({row['anchor']}: {row['anchor_value']:,.2f} {row['unit']})"
            if row.get("anchor")
            else ""
        )
        print(f"{row['name']}: {row['value']:,.2f} {row['unit']}{anchor}  [{row['note']}]")


if __name__ == "__main__":
    main()
