"""Ingest throughput with one and with two scheduler processes (sharded ingest, issue 16).

    python -m bench.ingest_shards [--runs 20] [--batches 40] [--events 500] [--no-postgres]

For each database (SQLite; PostgreSQL unless ``--no-postgres``) and for 1 then 2
``runyard scheduler`` processes (real processes, default ``RUNYARD_INGEST_SHARDS`` = 8):
a fresh database with ``--runs`` running runs, the schedulers started and waited for
until they share the shards, then ``--runs`` x ``--batches`` TrackingBatch entries of
``--events`` metric points each appended to the ingest at once (one pipeline, as workers
would, each to its run's shard); the figure is points per second from the append until
every ingest stream has nothing unread or unacknowledged (read from Redis every 20 ms).
The load average is printed beside each figure: the machine is shared.

Not a test: it asserts nothing about speed. Every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine
from sqlmodel import Session

from protocol import keys
from protocol.messages import TrackingBatch
from protocol.replies import as_text
from protocol.streams import append, ingest_shards
from runyard.status import RunStatus
from store.db import make_engine, migrate
from tests.support.database import make_cluster, queue_run, walk
from tests.support.services import Stack, postgres_server, redis_server, runyard, wait_until


def progress(message: str) -> None:
    print(f"[bench.ingest_shards] {message}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def prepare_database(url: str, runs: int) -> list[str]:
    engine = make_engine(url)
    try:
        migrate(engine)
        with Session(engine) as session:
            make_cluster(session)
            ids = [queue_run(session) for _ in range(runs)]
            for run_id in ids:
                walk(session, run_id, RunStatus.PREPARING, RunStatus.STARTING, RunStatus.RUNNING)
            session.commit()
        return ids
    finally:
        engine.dispose()


def stored_points(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM metricpoint").scalar_one())
    finally:
        engine.dispose()


def lag(client: redis.Redis) -> int:
    pipe = client.pipeline(transaction=False)
    for stream in keys.ingest_streams(ingest_shards()):
        pipe.xinfo_groups(stream)
    total = 0
    for groups in pipe.execute(raise_on_error=False):
        if isinstance(groups, Exception):
            continue
        for group in groups:
            if as_text(group["name"]) == keys.INGEST_GROUP:
                total += int(group.get("lag") or 0) + int(group.get("pending") or 0)
    return total


def shared(client: redis.Redis, schedulers: int) -> bool:
    owners = [
        None if v is None else as_text(v).split(" ", 1)[1]
        for v in client.mget([keys.ingest_shard_lease(s) for s in range(ingest_shards())])
    ]
    return None not in owners and len(set(owners)) == schedulers


def measure(
    root: Path, server: Any, database_url: str, schedulers: int, args: argparse.Namespace
) -> float:
    ids = prepare_database(database_url, args.runs)
    client = redis.Redis.from_url(server.url)
    client.flushall()
    stack = Stack(root=root, redis=server, database_url=database_url)
    root.mkdir(parents=True, exist_ok=True)
    try:
        for n in range(schedulers):
            stack._spawn(runyard("scheduler"), f"scheduler-{n}.log")
        wait_until(lambda: shared(client, schedulers), 60, 0.1, what="the shards to be shared")
        pipe = client.pipeline(transaction=False)
        entries = [
            TrackingBatch(
                run_id=run_id,
                origin=run_id,
                producer="bench",
                events=[
                    [b * args.events + i, {"r": run_id, "k": "m", "n": "loss", "v": float(i)}]
                    for i in range(args.events)
                ],
            )
            for b in range(args.batches)
            for run_id in ids
        ]
        append(pipe, entries)
        started = time.perf_counter()
        pipe.execute()
        wait_until(lambda: lag(client) == 0, 600, 0.02, what="the ingest to drain")
        elapsed = time.perf_counter() - started
        stored = stored_points(database_url)
        if stored != len(entries) * args.events:
            progress(f"only {stored} of {len(entries) * args.events} points were stored")
        return len(entries) * args.events / elapsed
    finally:
        stack.stop()
        client.close()


@contextlib.contextmanager
def databases(root: Path, postgres: bool) -> Iterator[list[tuple[str, Any]]]:
    """(name, a function giving a fresh database URL per measurement)."""
    with contextlib.ExitStack() as stack:
        counter = iter(range(1000))

        def sqlite_url() -> str:
            return f"sqlite:///{root}/bench-{next(counter)}.db"

        found: list[tuple[str, Any]] = [("SQLite", sqlite_url)]
        if postgres:
            server_url = stack.enter_context(postgres_server(root / "pg"))

            def postgres_url() -> str:
                name = f"shards_{next(counter)}"
                admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.exec_driver_sql(f"CREATE DATABASE {name}")
                admin.dispose()
                return server_url.rsplit("/", 1)[0] + f"/{name}"

            found.append(("PostgreSQL", postgres_url))
        yield found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as folder:
        root = Path(folder)
        root.chmod(0o755)  # PostgreSQL's server runs as its own user
        with redis_server(root / "redis") as server, databases(root, not args.no_postgres) as dbs:
            for name, fresh in dbs:
                rate = {}
                for schedulers in (1, 2):
                    progress(f"{name}, {schedulers} scheduler(s)")
                    rate[schedulers] = measure(
                        root / f"{name}-{schedulers}", server, fresh(), schedulers, args
                    )
                    rows.append((name, schedulers, rate[schedulers], loadavg()))
                rows.append((name, "2 vs 1", rate[2] / rate[1], ""))
    points = args.runs * args.batches * args.events
    print(
        f"ingest of {points} points ({args.runs} runs x {args.batches} batches x "
        f"{args.events} points), {ingest_shards()} shards"
    )
    print("| database | schedulers | points/s (ratio for '2 vs 1') | load average (1, 5, 15 min) |")
    print("|---|---|---|---|")
    for name, schedulers, value, load in rows:
        figure = f"{value:.2f}x" if schedulers == "2 vs 1" else f"{value:,.0f}"
        print(f"| {name} | {schedulers} | {figure} | {load} |")


if __name__ == "__main__":
    main()
