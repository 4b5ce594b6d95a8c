"""Admission (``scheduler/admission.py``): queued runs go to the broker only into a free
slot, highest priority first, then in submit order."""

from __future__ import annotations

import redis
from celery import Celery
from sqlalchemy import Engine
from sqlmodel import Session

from protocol import keys
from protocol.messages import LOG_SEQ_STRIDE, LogChunk
from protocol.workers import live_workers
from runyard.status import RunStatus
from scheduler.ingest import insert_log
from scheduler.service import dispatch_cluster
from store import run_listings
from tests.support.database import (
    CLUSTER,
    four_runs,
    heartbeat,
    log_rows,
    make_cluster,
    queue_run,
    reload,
    set_columns,
    walk,
)


def test_dispatch_fills_the_free_nodes_with_the_highest_priority_runs_in_submit_order(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    ids = four_runs(session)

    sent = dispatch_cluster(session, celery, CLUSTER, live_workers(client))

    assert sent == [ids[1], ids[3]]
    assert client.llen(keys.cluster_queue(CLUSTER)) == len(sent)
    assert reload(engine, ids[1]).dispatched_at is not None
    assert reload(engine, ids[0]).dispatched_at is None


def test_dispatch_admits_the_next_runs_once_the_first_have_finished(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    ids = four_runs(session)
    workers = live_workers(client)
    first = dispatch_cluster(session, celery, CLUSTER, workers)

    assert dispatch_cluster(session, celery, CLUSTER, workers) == []
    for run_id in first:
        walk(session, run_id, RunStatus.PREPARING, RunStatus.COMPLETED)

    assert dispatch_cluster(session, celery, CLUSTER, workers) == [ids[0], ids[2]]
    assert client.llen(keys.cluster_queue(CLUSTER)) == 4


def test_fewer_worker_slots_than_nodes_cap_dispatch_and_are_named_in_the_reason(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=1)
    ids = four_runs(session)

    assert dispatch_cluster(session, celery, CLUSTER, live_workers(client)) == [ids[1]]

    waiting = [r for r in run_listings.queued_runs(session, client, CLUSTER) if r.position]
    assert waiting[0].pending_reason == "all 1 worker slot(s) busy (node limit 2)"


def test_without_a_live_worker_nothing_is_dispatched_and_the_reason_says_so(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, "another-cluster", slots=4)
    four_runs(session)

    assert dispatch_cluster(session, celery, CLUSTER, live_workers(client)) == []
    assert client.llen(keys.cluster_queue(CLUSTER)) == 0

    queue = run_listings.queued_runs(session, client, CLUSTER)
    assert [r.position for r in queue] == [1, 2, 3, 4]
    assert {r.pending_reason for r in queue} == {f"no worker serves cluster {CLUSTER}"}


def test_two_dispatchers_failing_the_same_run_write_its_line_once(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    """A run that cannot start is failed with a line in its log. Two schedulers may both
    read it as waiting: the second finds the first one's line there, and goes on."""
    make_cluster(session, nodes=1)
    heartbeat(client, CLUSTER, slots=1)
    run_id = queue_run(session)
    set_columns(session, run_id, environment={"docker": {"enabled": True}})
    with Session(engine) as other:  # the other scheduler got as far as the line
        insert_log(other, LogChunk(run_id=run_id, seq=LOG_SEQ_STRIDE, text="its line\n"))
        other.commit()

    assert dispatch_cluster(session, celery, CLUSTER, live_workers(client)) == []

    run = reload(engine, run_id)
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith("cannot start: this run asks for a Docker container")
    assert log_rows(engine, run_id) == [(LOG_SEQ_STRIDE, "its line\n")]
