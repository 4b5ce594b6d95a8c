"""The scheduler's units of work (``scheduler.service``) commit once, then act on other
processes: a run's Celery task is sent only once the database shows the run handed over,
whether admission sends it or the watchdog sends it again; one run that cannot start
never holds up the queue behind it.

Real Redis, a real Celery app on it, each database kind. At the moment a task is sent, a
session of its own reads the run: what a worker receiving that task would find.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine
from sqlmodel import Session, col, update

from protocol import control, keys
from protocol.celery_app import make_celery
from protocol.messages import RunAssignment
from protocol.settings import Settings
from protocol.workers import WorkerInfo, live_workers, publish_heartbeat, remove_worker
from runyard.status import RunStatus
from scheduler.service import dispatch_cluster, sweep_runs
from store import clusters
from store.db import as_utc
from store.models import ClusterCreate, Run, utcnow
from tests.support.database import queue_run
from tests.support.services import RedisServer, unique


@pytest.fixture
def client(redis_service: RedisServer) -> Iterator[redis.Redis]:
    """The shared Redis server, left as it is (not flushed): this module's keys are its own."""
    client = redis.Redis.from_url(redis_service.url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def cluster(engine: Engine, client: redis.Redis) -> Iterator[str]:
    """A local cluster of one node, served by one live worker slot (its heartbeat only)."""
    name = unique("uow")
    with Session(engine) as session:
        clusters.create_cluster(session, ClusterCreate(name=name, nodes=1))
        session.commit()
    info = WorkerInfo(id=unique("w"), hostname="node-1", clusters=[name], slots=1)
    publish_heartbeat(client, info, ttl=60)
    try:
        yield name
    finally:  # the Redis server is shared with the tests that follow
        remove_worker(client, info.id)
        client.delete(keys.cluster_queue(name))


class SeenAtSend:
    """A real Celery app whose every send first reads the run as the database holds it."""

    def __init__(self, celery: Celery, engine: Engine) -> None:
        self.engine = engine
        self.seen: list[tuple[str, int, bool]] = []  # run id, attempt, handed over
        self._send = celery.send_task
        celery.send_task = self.send_task  # type: ignore[method-assign]

    def send_task(self, name: str, args: list[Any], **options: Any) -> Any:
        assignment = RunAssignment.decode(args[0])
        with Session(self.engine) as fresh:
            run = fresh.get(Run, assignment.run_id)
            assert run is not None
            self.seen.append((run.id, run.attempt, run.dispatched_at is not None))
        return self._send(name, args, **options)


@pytest.fixture
def celery(redis_service: RedisServer, engine: Engine) -> Iterator[tuple[Celery, SeenAtSend]]:
    app = make_celery(redis_service.url)
    try:
        yield app, SeenAtSend(app, engine)
    finally:
        app.close()


def waiting_run(engine: Engine, cluster: str) -> str:
    """A run queued on ``cluster`` through the store, committed (its own session)."""
    with Session(engine) as session:
        return queue_run(session, cluster, experiment="uow")


def stored(engine: Engine, run_id: str) -> Run:
    with Session(engine) as fresh:
        run = fresh.get(Run, run_id)
        assert run is not None
        return run


def settings(**overrides: Any) -> Settings:
    return Settings(**{"not_responding_after": 1, "failed_after": 1, **overrides})


def test_a_run_is_committed_as_handed_over_before_its_task_is_sent(
    engine: Engine, client: redis.Redis, cluster: str, celery: tuple[Celery, SeenAtSend]
) -> None:
    app, sends = celery
    run_id = waiting_run(engine, cluster)

    with Session(engine) as session:
        sent = dispatch_cluster(session, app, cluster, live_workers(client))

    assert sent == [run_id]
    assert sends.seen == [(run_id, 1, True)]
    assert client.llen(keys.cluster_queue(cluster)) == 1


def test_a_run_that_cannot_start_fails_and_frees_its_slot_for_the_next(
    engine: Engine, client: redis.Redis, cluster: str, celery: tuple[Celery, SeenAtSend]
) -> None:
    app, sends = celery
    unrunnable = waiting_run(engine, cluster)
    runnable = waiting_run(engine, cluster)
    with Session(engine) as session:  # it asks for what the cluster now refuses
        wants_docker = {"docker": {"enabled": True}}
        session.execute(
            update(Run).where(col(Run.id) == unrunnable).values(environment=wants_docker)
        )
        session.commit()

    with Session(engine) as session:
        first = dispatch_cluster(session, app, cluster, live_workers(client))
        then = dispatch_cluster(session, app, cluster, live_workers(client))

    assert (first, then) == ([], [runnable])
    assert sends.seen == [(runnable, 1, True)]
    failed = stored(engine, unrunnable)
    assert failed.status == RunStatus.FAILED
    assert failed.failure_reason.startswith("cannot start: this run asks for a Docker container")


def test_a_task_no_worker_claimed_is_sent_again_once_it_is_marked_anew(
    engine: Engine, client: redis.Redis, cluster: str, celery: tuple[Celery, SeenAtSend]
) -> None:
    app, sends = celery
    run_id = waiting_run(engine, cluster)
    with Session(engine) as session:
        dispatch_cluster(session, app, cluster, live_workers(client))
        long_ago = utcnow() - timedelta(hours=1)
        session.execute(update(Run).where(col(Run.id) == run_id).values(dispatched_at=long_ago))
        session.commit()
        client.delete(keys.cluster_queue(cluster))  # the message was lost

        sweep_runs(session, client, app, settings(dispatch_timeout=60))

    assert sends.seen == [(run_id, 1, True), (run_id, 1, True)]
    assert client.llen(keys.cluster_queue(cluster)) == 1
    renewed = as_utc(stored(engine, run_id).dispatched_at)
    assert renewed is not None and renewed > long_ago


def test_a_run_claimed_by_a_worker_that_vanished_goes_back_to_the_queue(
    engine: Engine, client: redis.Redis, cluster: str, celery: tuple[Celery, SeenAtSend]
) -> None:
    app, _ = celery
    run_id = waiting_run(engine, cluster)
    with Session(engine) as session:
        dispatch_cluster(session, app, cluster, live_workers(client))
        assert control.claim_run(client, run_id, "w-gone", attempt=1) == control.ClaimResult.CLAIMED
        long_ago = utcnow() - timedelta(hours=1)
        session.execute(update(Run).where(col(Run.id) == run_id).values(dispatched_at=long_ago))
        session.commit()

        sweep_runs(session, client, app, settings(dispatch_timeout=60))

    run = stored(engine, run_id)
    assert (run.status, run.dispatched_at) == (RunStatus.QUEUED, None)
    assert not control.is_claimed(client, run_id, attempt=1)


def test_a_lost_run_that_can_no_longer_start_fails_and_the_rest_of_the_sweep_stands(
    engine: Engine, client: redis.Redis, cluster: str, celery: tuple[Celery, SeenAtSend]
) -> None:
    """The cluster changed under a handed-over run whose message was lost: sending it again
    would break the cluster's rule, so it fails, and what the same pass decided about
    other runs (a silent run turning NotResponding) is kept."""
    app, sends = celery
    lost = waiting_run(engine, cluster)
    silent = waiting_run(engine, cluster)
    long_ago = utcnow() - timedelta(hours=1)
    with Session(engine) as session:
        dispatch_cluster(session, app, cluster, live_workers(client))
        client.delete(keys.cluster_queue(cluster))  # the message was lost
        wants_docker = {"docker": {"enabled": True}}  # what the local cluster now refuses
        session.execute(
            update(Run)
            .where(col(Run.id) == lost)
            .values(dispatched_at=long_ago, environment=wants_docker)
        )
        session.execute(  # a run on a node that stopped sending heartbeats
            update(Run)
            .where(col(Run.id) == silent)
            .values(
                status=RunStatus.RUNNING,
                attempt=1,
                dispatched_at=long_ago,
                preparing_at=long_ago,
                running_at=long_ago,
            )
        )
        session.commit()

        sweep_runs(session, client, app, settings(dispatch_timeout=60))

    failed = stored(engine, lost)
    assert failed.status == RunStatus.FAILED
    assert failed.failure_reason.startswith("cannot start: this run asks for a Docker container")
    assert stored(engine, silent).status == RunStatus.NOT_RESPONDING
    assert sends.seen == [(lost, 1, True)]  # the first hand-over only: never sent again


class BrokerFailsAt:
    """A real Celery app whose ``n``-th send fails, as when the broker goes away."""

    def __init__(self, celery: Celery, n: int) -> None:
        self.calls = 0
        self.n = n
        self._send = celery.send_task
        celery.send_task = self.send_task  # type: ignore[method-assign]

    def send_task(self, name: str, args: list[Any], **options: Any) -> Any:
        self.calls += 1
        if self.calls == self.n:
            raise ConnectionError("broker went away")
        return self._send(name, args, **options)


def test_when_the_broker_fails_mid_dispatch_the_runs_not_sent_wait_again(
    engine: Engine, client: redis.Redis, redis_service: RedisServer
) -> None:
    name = unique("uow3")
    with Session(engine) as session:
        clusters.create_cluster(session, ClusterCreate(name=name, nodes=3))
        session.commit()
    info = WorkerInfo(id=unique("w"), hostname="node-3", clusters=[name], slots=3)
    publish_heartbeat(client, info, ttl=60)
    app = make_celery(redis_service.url)
    BrokerFailsAt(app, 2)
    try:
        first, second, third = (waiting_run(engine, name) for _ in range(3))
        with Session(engine) as session, pytest.raises(ConnectionError):
            dispatch_cluster(session, app, name, live_workers(client))

        assert client.llen(keys.cluster_queue(name)) == 1
        assert stored(engine, first).dispatched_at is not None
        # The failed send may have reached the broker: handed over, for the watchdog.
        assert stored(engine, second).dispatched_at is not None
        waiting = stored(engine, third)
        assert (waiting.status, waiting.dispatched_at, waiting.attempt) == (
            RunStatus.QUEUED,
            None,
            0,
        )
    finally:
        remove_worker(client, info.id)
        client.delete(keys.cluster_queue(name))
        app.close()
