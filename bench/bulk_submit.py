"""Bulk submit (issue 16, item 6): a 5,000-run job array in one request, against 5,000
single submits.

    python -m bench.bulk_submit [--runs 5000] [--singles 200] [--no-postgres]

Starts a private Redis, the API and the scheduler as real processes (SQLite, then a
throwaway PostgreSQL unless ``--no-postgres``; no workers: only submission is timed), with
the per-token limits raised so the singles are not held back by them. Times
``Experiment.submit_array`` (pack, one upload, one request), the REST request of another
array alone, and ``Experiment.submit`` ``--singles`` times (extrapolated to ``--runs``), and
prints how long the same sweep takes under the default limit of 120 submissions a minute.
Not a test: it asserts nothing about speed; ``figures()`` gives the rows ``python -m
bench`` tabulates.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.core import config
from runyard.core import Experiment, Workspace
from tests.support.services import Stack, redis_server, throwaway_postgres

DEFAULT_LIMIT_PER_MINUTE = 120  # protocol/settings.py submit_rate_limit


@contextmanager
def database(kind: str) -> Iterator[str]:
    """ "" for the stack's own SQLite file, else a throwaway PostgreSQL server's URL."""
    if kind == "sqlite":
        yield ""
        return
    with throwaway_postgres("runyard-bench-pg-") as url:
        yield url


def measure(runs: int, singles: int, kind: str = "sqlite") -> dict[str, float]:
    """Seconds for one array of ``runs`` through the SDK, for the REST request of another
    alone (snapshot already stored), and per single submit (mean of ``singles``)."""
    with (
        tempfile.TemporaryDirectory(prefix="runyard-bench-bulk-") as tmp,
        database(kind) as database_url,
    ):
        root = Path(tmp)
        folder = root / "src"
        folder.mkdir()
        (folder / "noop.py").write_text("print('ok')\n")
        with redis_server(root / "redis") as redis:
            stack = Stack(
                root=root / "stack",
                redis=redis,
                database_url=database_url,
                extra_env={
                    "RUNYARD_SUBMIT_RATE_LIMIT": "1000000/minute",
                    "RUNYARD_ARRAY_RUN_RATE_LIMIT": "1000000/hour",
                },
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
                spec = {
                    "experiment": "rest",
                    "cluster": "bulk",
                    "script": "noop.py",
                    "snapshot_digest": stack.client().get_run(array[0].id)["snapshot_digest"],
                    "arguments_list": arguments,
                }
                started = time.perf_counter()
                answer = stack.client().submit_array(spec)
                rest_seconds = time.perf_counter() - started
                assert answer["count"] == runs
                single = Experiment(workspace, "singles")
                started = time.perf_counter()
                for i in range(singles):
                    cfg.arguments = ["--seed", str(i)]
                    single.submit(cfg)
                single_seconds = (time.perf_counter() - started) / singles
            finally:
                stack.stop()
    return {"array": array_seconds, "rest": rest_seconds, "single": single_seconds}


def rows(runs: int, singles: int, postgres: bool = True) -> list[dict[str, Any]]:
    timed = measure(runs, singles)
    extrapolated = timed["single"] * runs
    limited = runs / DEFAULT_LIMIT_PER_MINUTE * 60
    load = os.getloadavg()[0]
    out = [
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
            "name": f"bulk submit: {runs:,} runs, the REST request alone (SQLite)",
            "value": timed["rest"],
            "unit": "s",
            "goal": "<= 5",
            "note": "POST /runs/array with a stored snapshot's digest",
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
    if postgres:
        on_postgres = measure(runs, min(singles, 50), "postgresql")
        out.append(
            {
                "name": f"bulk submit: {runs:,} runs in one request (PostgreSQL)",
                "value": on_postgres["array"],
                "unit": "s",
                "anchor": f"{runs:,} single submits",
                "anchor_value": on_postgres["single"] * runs,
                "goal": "<= 5",
                "note": f"REST request alone {on_postgres['rest']:.2f} s; "
                f"load {os.getloadavg()[0]:.1f}",
            }
        )
    return out


def figures(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for ``python -m bench`` (name, value, unit, anchor, anchor_value, goal, note)."""
    return rows(1000, 50, postgres=False) if quick else rows(5000, 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--singles", type=int, default=200)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    for row in rows(args.runs, args.singles, postgres=not args.no_postgres):
        anchor = (
            f"  ({row['anchor']}: {row['anchor_value']:,.2f} {row['unit']})"
            if row.get("anchor")
            else ""
        )
        print(f"{row['name']}: {row['value']:,.2f} {row['unit']}{anchor}  [{row['note']}]")


if __name__ == "__main__":
    main()
