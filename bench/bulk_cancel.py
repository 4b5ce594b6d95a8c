"""Bulk cancel (issue 16): ``cancel-queued`` of a 10,000-run queue, one run at a time (the
path before) against set-based (``store.runs.cancel_queue``), in the same invocation.

    python -m bench.bulk_cancel [--runs 10000] [--no-postgres]

Starts a private Redis, and a throwaway PostgreSQL unless ``--no-postgres``; the database
is written and read through the store layer, as the ``cancel-queued`` route does (read the
queue a batch at a time, cancel, audit, one commit, then the announcements). Each way gets
a queue of its own of ``--runs`` runs (a job array) on a fresh cluster of the same
database, one after the other. Before each timing the counters are checked against a
recount, and after it every run must be Canceled. Not a test: it asserts nothing about
speed; ``figures()`` gives the rows ``python -m bench`` tabulates.

"One at a time" is ``store.runs.cancel_with_children`` per run, which is what
``cancel_many`` did for every run before it cancelled waiting runs together: each run its
own UPDATE, so on PostgreSQL each fires the counter trigger on the same counter rows.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from runyard.status import RunStatus
from store import audit, clusters, counters, run_listings, runs
from store.announcements import Announcements
from store.db import make_engine, migrate
from store.models import AuditEvent, CancelResult, ClusterCreate, Run, RunArraySpec
from store.models.runs import MAX_ARRAY_RUNS
from store.tokens import Actor
from tests.support.services import redis_server, throwaway_postgres

DIGEST = "sha256:" + "0" * 64
ACTOR = Actor(name="bench", role="admin")

Cancel = Callable[[Session, redis.Redis, str, Announcements], list[CancelResult]]


def one_at_a_time(
    session: Session, client: redis.Redis, cluster: str, news: Announcements
) -> list[CancelResult]:
    """The path before: the queue read a batch at a time, each run cancelled on its own."""
    results = []
    for batch in run_listings.queued_run_ids(session, cluster):
        for run_id in batch:
            run = runs.cancel_with_children(session, client, run_id, news)
            results.append(CancelResult(id=run_id, status=run.status))
    return results


WAYS: dict[str, Cancel] = {"one at a time": one_at_a_time, "set-based": runs.cancel_queue}


def fill(engine: Engine, cluster: str, count: int) -> None:
    """A cluster with ``count`` queued runs, submitted as job arrays through the store."""
    with Session(engine) as session:
        clusters.create_cluster(session, ClusterCreate(name=cluster, nodes=1))
        for start in range(0, count, MAX_ARRAY_RUNS):
            size = min(MAX_ARRAY_RUNS, count - start)
            spec = RunArraySpec(
                experiment="sweep",
                cluster=cluster,
                script="train.py",
                arguments_list=[["--seed", str(i)] for i in range(start, start + size)],
            )
            runs.submit_array(session, spec, DIGEST, submitted_by="bench")
        session.commit()


def counters_exact(engine: Engine) -> bool:
    with Session(engine) as session:
        return counters.read(session) == counters.recount(session)


def cancel_queue(engine: Engine, client: redis.Redis, cluster: str, way: Cancel) -> float:
    """Seconds for the ``cancel-queued`` route's work: cancel, audit, commit, announce."""
    started = time.perf_counter()
    with Session(engine) as session:
        news = Announcements()
        results = way(session, client, cluster, news)
        audit.record_cancels(session, ACTOR, results)
        session.commit()
    news.send(client)
    seconds = time.perf_counter() - started
    assert all(r.status == RunStatus.CANCELED for r in results), "a run was not cancelled"
    return seconds


def check_all_canceled(engine: Engine, cluster: str, count: int, cancels: int) -> None:
    """Every run of the queue Canceled, and ``cancels`` audit records in all."""
    with Session(engine) as session:
        canceled = session.exec(
            select(func.count())
            .select_from(Run)
            .where(Run.cluster == cluster, Run.status == RunStatus.CANCELED)
        ).one()
        audited = session.exec(
            select(func.count())
            .select_from(AuditEvent)
            .where(col(AuditEvent.action) == "run.cancel")
        ).one()
    assert canceled == count, f"{canceled} of {count} runs Canceled"
    assert audited == cancels, f"{audited} audit records, not {cancels}"


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A database of ``kind``: a SQLite file in ``folder``, or a throwaway PostgreSQL."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    with throwaway_postgres("runyard-bench-pg-") as url:
        yield url


def measure(kind: str, count: int) -> dict[str, float]:
    """Seconds to cancel a queue of ``count`` runs, each way, on one database of ``kind``."""
    timed: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="runyard-bench-cancel-") as tmp:
        root = Path(tmp)
        with redis_server(root / "redis") as server, database(kind, root) as url:
            client = redis.Redis.from_url(server.url)
            engine = make_engine(url)
            try:
                migrate(engine)
                for index, (name, way) in enumerate(WAYS.items()):
                    cluster = f"queue-{index}"
                    fill(engine, cluster, count)
                    assert counters_exact(engine), "counters differ from a recount"
                    timed[name] = cancel_queue(engine, client, cluster, way)
                    check_all_canceled(engine, cluster, count, count * (index + 1))
                    assert counters_exact(engine), "counters differ from a recount"
                    timed[f"{name} load"] = os.getloadavg()[0]
            finally:
                engine.dispose()
                client.close()
    return timed


def rows(count: int, postgres: bool = True) -> list[dict[str, Any]]:
    out = []
    for kind, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        if kind == "postgresql" and not postgres:
            continue
        timed = measure(kind, count)
        before, after = timed["one at a time"], timed["set-based"]
        out.append(
            {
                "name": f"cancel-queued: {count:,} queued runs ({label})",
                "value": after,
                "unit": "s",
                "anchor": "one run at a time (before)",
                "anchor_value": before,
                "note": f"{before / after:.1f}x faster; load {timed['one at a time load']:.1f} "
                f"/ {timed['set-based load']:.1f}",
            }
        )
    return out


def figures(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for ``python -m bench`` (name, value, unit, anchor, anchor_value, goal, note)."""
    return rows(1000, postgres=False) if quick else rows(10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    for row in rows(args.runs, postgres=not args.no_postgres):
        print(
            f"{row['name']}: {row['value']:,.2f} {row['unit']}  "
            f"({row['anchor']}: {row['anchor_value']:,.2f} {row['unit']})  [{row['note']}]"
        )


if __name__ == "__main__":
    main()
