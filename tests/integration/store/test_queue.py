"""The queue as the store describes it (``store/queue.py``): each waiting run's position and
the reason it has not started, for queues of any length."""

from __future__ import annotations

import sqlite3

import redis
import sqlalchemy
from celery import Celery
from sqlalchemy import Engine
from sqlmodel import Session

from protocol.workers import live_workers, remove_worker
from scheduler.service import dispatch_cluster
from store import run_listings
from store.models import Run
from tests.support.database import CLUSTER, four_runs, heartbeat, make_cluster, queue_run, reload


def queued_in_bulk(session: Session, count: int) -> list[str]:
    """``count`` more waiting runs like one submitted run, inserted in a few statements (as a
    busy cluster's queue holds them), in queue order after it."""
    first = reload(session.get_bind(), queue_run(session))  # type: ignore[arg-type]
    row = first.model_dump()
    ids = [f"{first.id}-{i:05d}" for i in range(count)]
    rows = [{**row, "id": run_id, "created_at": first.created_at} for run_id in ids]
    # Multi-row statements: the database's counters are kept per statement on PostgreSQL
    # (migration 0012), so a bulk writer writes rows in statements, not one at a time.
    for start in range(0, len(rows), 500):
        session.execute(sqlalchemy.insert(Run).values(rows[start : start + 500]))
    session.commit()
    return [first.id, *ids]


SQLITE_DEFAULT_VARIABLES = 32_766  # SQLite's own build; Debian's allows 250,000
POSTGRES_MAX_PARAMETERS = 65_535  # the wire protocol's limit per statement


def upstream_sqlite_limits(engine: Engine) -> None:
    """SQLite connections with the upstream default limit on variables, whatever this
    machine's build allows: the limit a user's SQLite may well have."""
    if engine.dialect.name != "sqlite":
        return
    limit = (sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, SQLITE_DEFAULT_VARIABLES)
    sqlalchemy.event.listen(engine, "connect", lambda dbapi, _: dbapi.setlimit(*limit))
    engine.dispose()  # connections made before now get no limit


def test_the_queue_shows_positions_and_why_the_rest_wait(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    ids = four_runs(session)
    dispatch_cluster(session, celery, CLUSTER, live_workers(client))

    queue = run_listings.queued_runs(session, client, CLUSTER)

    handed = [(r.id, r.position, r.pending_reason) for r in queue if r.position is None]
    waiting = [(r.id, r.position, r.pending_reason) for r in queue if r.position is not None]
    assert handed == [
        (ids[1], None, "handed to a worker; starting"),
        (ids[3], None, "handed to a worker; starting"),
    ]
    assert waiting == [
        (ids[0], 1, "all 2 node(s) busy"),
        (ids[2], 2, "waiting behind 1 run(s); all 2 node(s) busy"),
    ]


def test_a_worker_that_left_no_longer_serves_the_queue(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    ids = four_runs(session)
    dispatch_cluster(session, celery, CLUSTER, live_workers(client))

    remove_worker(client, "w-1")

    waiting = [r for r in run_listings.queued_runs(session, client, CLUSTER) if r.position]
    assert [r.id for r in waiting] == [ids[0], ids[2]]
    assert {r.pending_reason for r in waiting} == {f"no worker serves cluster {CLUSTER}"}


def test_a_queue_longer_than_the_databases_variable_limit_is_described(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    """The queue's positions name no list of run ids: 70,000 waiting runs (more variables
    than one statement takes, on SQLite and PostgreSQL) list and describe."""
    upstream_sqlite_limits(engine)
    make_cluster(session, nodes=1)
    heartbeat(client, CLUSTER, slots=1)
    ids = queued_in_bulk(session, POSTGRES_MAX_PARAMETERS + 4_465)
    assert dispatch_cluster(session, celery, CLUSTER, live_workers(client)) == [ids[0]]
    waiting = len(ids) - 1
    last = reload(engine, ids[-1])

    queue = run_listings.queued_runs(session, client, CLUSTER)  # GET /clusters/{name}/runs
    places = run_listings.queue_places(session, client, [last])  # GET /runs
    described = run_listings.describe(session, client, last)  # GET /runs/{id}

    assert len(queue) == len(ids)
    assert (queue[0].id, queue[0].pending_reason) == (ids[0], "handed to a worker; starting")
    assert (queue[1].position, queue[1].pending_reason) == (1, "all 1 node(s) busy")
    reason = f"waiting behind {waiting - 1} run(s); all 1 node(s) busy"
    assert places[last.id] == (waiting, reason)
    assert (described.position, described.pending_reason) == (waiting, reason)
