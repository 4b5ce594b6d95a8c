"""The store against both databases: schema, clusters, runs, lifecycle, admission, cancel,
ingest and watchdog, each run on a fresh SQLite file and a fresh PostgreSQL database.

Services never commit; tests commit where another session (the ingest, a re-read) must see
the change. Redis is the real session-scoped server, flushed at the start of every test.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy
from alembic.script import ScriptDirectory
from celery import Celery
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select, update

from protocol import control, keys
from protocol.celery_app import make_celery
from protocol.messages import LOG_SEQ_STRIDE, LogChunk, StateChanged, TrackingBatch
from protocol.settings import Settings
from protocol.streams import send_to_ingest
from protocol.workers import WorkerInfo, live_workers, publish_heartbeat, remove_worker
from runyard.errors import (
    AlreadyExists,
    ClusterBusy,
    ClusterNotFound,
    IllegalTransition,
    RunFinished,
    Unauthorized,
)
from runyard.status import TIMESTAMP_FIELD, RunStatus
from scheduler.ingest import Ingest, insert_log
from scheduler.service import dispatch_cluster, sweep_runs
from store import clusters, runs, tokens, tracking
from store.db import MIGRATIONS, as_utc, make_engine, migrate
from store.lifecycle import transition
from store.models import (
    ROLLUP_SPAN,
    Cluster,
    ClusterCreate,
    ClusterUpdate,
    Experiment,
    MetricPoint,
    MetricRollup,
    Run,
    RunLog,
    RunSpec,
    utcnow,
)
from tests.support.services import RedisServer

DIGEST = "sha256:" + "0" * 64
CLUSTER = "gpu-a"
TABLES = {
    "alembic_version",
    "cluster",
    "experiment",
    "run",
    "runlog",
    "runfile",
    "metric",
    "metricpoint",
    "runtag",
    "runproperty",
    "apitoken",
    "auditevent",
    "metricrollup",
}

# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A freshly migrated database of each kind."""
    engine = make_engine(database_url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session


@pytest.fixture
def client(redis_service: RedisServer) -> Iterator[redis.Redis]:
    """The shared Redis server, emptied for this test."""
    client = redis.Redis.from_url(redis_service.url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def celery(redis_service: RedisServer) -> Iterator[Celery]:
    app = make_celery(redis_service.url)
    try:
        yield app
    finally:
        app.close()


# --- helpers --------------------------------------------------------------------------------


def ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


def same_instant(stored: datetime | None, expected: datetime) -> bool:
    """SQLite hands back naive UTC, PostgreSQL aware datetimes; compare the instant."""
    return as_utc(stored) == expected


def make_cluster(session: Session, name: str = CLUSTER, nodes: int = 1, **fields: Any) -> Cluster:
    cluster = clusters.create_cluster(session, ClusterCreate(name=name, nodes=nodes, **fields))
    session.commit()
    return cluster


def submit(
    session: Session,
    cluster: str = CLUSTER,
    *,
    experiment: str = "mnist",
    priority: int = 0,
    created_at: datetime | None = None,
) -> str:
    """Submit a run and commit; ``created_at`` pins its place in the queue."""
    spec = RunSpec(experiment=experiment, cluster=cluster, script="train.py", priority=priority)
    run = runs.submit(session, spec, DIGEST, submitted_by=None)
    if created_at is not None:
        run.created_at = created_at
        session.add(run)
    session.commit()
    return run.id


def walk(session: Session, run_id: str, *statuses: RunStatus) -> Run:
    """Move a run through ``statuses`` in order and commit."""
    run = None
    for status in statuses:
        run = transition(session, run_id, status)
    session.commit()
    assert run is not None
    return run


def set_columns(session: Session, run_id: str, **values: Any) -> None:
    """Write columns directly (to put timestamps in the past) and commit."""
    session.execute(update(Run).where(col(Run.id) == run_id).values(**values))
    session.commit()


def reload(engine: Engine, run_id: str) -> Run:
    """The run as stored, read through a session of its own."""
    with Session(engine) as fresh:
        run = fresh.get(Run, run_id)
        assert run is not None
        return run


def log_rows(engine: Engine, run_id: str) -> list[tuple[int, str]]:
    with Session(engine) as fresh:
        rows = fresh.exec(
            select(RunLog.seq, RunLog.text).where(RunLog.run_id == run_id).order_by(RunLog.seq)
        )
        return [(seq, text) for seq, text in rows]


def heartbeat(client: redis.Redis, *served: str, slots: int, worker: str = "w-1") -> WorkerInfo:
    info = WorkerInfo(id=worker, hostname="node-1", clusters=list(served), slots=slots)
    publish_heartbeat(client, info, ttl=30)
    return info


def pending_count(client: redis.Redis) -> int:
    return int(client.xpending(keys.INGEST_STREAM, keys.INGEST_GROUP)["pending"])


def fast_watchdog(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "not_responding_after": 1,
        "failed_after": 1,
        "dispatch_timeout": 3600,
        **overrides,
    }
    return Settings(**values)


# --- migrations -----------------------------------------------------------------------------


def test_migration_creates_every_table(engine: Engine) -> None:
    tables = set(sqlalchemy.inspect(engine).get_table_names())

    assert tables >= TABLES
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with engine.connect() as conn:
        versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()
        assert versions.all() == [head]


def test_migrating_twice_is_harmless_and_keeps_the_data(engine: Engine) -> None:
    with Session(engine) as session:
        make_cluster(session, "kept")

    migrate(engine)

    assert set(sqlalchemy.inspect(engine).get_table_names()) >= TABLES
    with Session(engine) as session:
        assert clusters.get_cluster(session, "kept").nodes == 1
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1


# --- clusters -------------------------------------------------------------------------------


def test_a_created_cluster_can_be_read_back(engine: Engine, session: Session) -> None:
    make_cluster(
        session,
        nodes=3,
        executor="docker",
        environment={"environment_variables": {"A": "1"}},
        cancel_grace_seconds=2.5,
        description="the A100s",
    )

    with Session(engine) as fresh:
        cluster = clusters.get_cluster(fresh, CLUSTER)
        assert (cluster.nodes, cluster.executor, cluster.environment) == (
            3,
            "docker",
            {"environment_variables": {"A": "1"}},
        )
        assert (cluster.cancel_grace_seconds, cluster.description) == (2.5, "the A100s")
        assert cluster.created_at is not None


def test_getting_an_unknown_cluster_raises_cluster_not_found(session: Session) -> None:
    with pytest.raises(ClusterNotFound):
        clusters.get_cluster(session, "nowhere")


def test_updating_a_cluster_changes_only_the_fields_given(engine: Engine, session: Session) -> None:
    created = make_cluster(session, nodes=1, description="before")
    created_updated_at = as_utc(created.updated_at)

    clusters.update_cluster(
        session,
        CLUSTER,
        ClusterUpdate(nodes=4, environment={"python": {"interpreter_path": "python3"}}),
    )
    session.commit()

    with Session(engine) as fresh:
        cluster = clusters.get_cluster(fresh, CLUSTER)
        assert (cluster.nodes, cluster.environment, cluster.description) == (
            4,
            {"python": {"interpreter_path": "python3"}},
            "before",
        )
        assert created_updated_at is not None
        assert as_utc(cluster.updated_at) >= created_updated_at  # type: ignore[operator]


def test_updating_an_unknown_cluster_raises_cluster_not_found(session: Session) -> None:
    with pytest.raises(ClusterNotFound):
        clusters.update_cluster(session, "nowhere", ClusterUpdate(nodes=2))


def test_listing_clusters_shows_them_by_name_with_workers_and_counts(
    session: Session, client: redis.Redis
) -> None:
    make_cluster(session, "zeta", nodes=2)
    make_cluster(session, "alpha", nodes=5)
    heartbeat(client, "zeta", slots=3)
    submit(session, "zeta")

    listed = clusters.list_clusters(session, client)

    assert [c.name for c in listed] == ["alpha", "zeta"]
    alpha, zeta = listed
    assert (alpha.slots, alpha.capacity, alpha.queued, alpha.workers) == (0, 0, 0, [])
    assert (zeta.slots, zeta.capacity, zeta.queued, zeta.active) == (3, 2, 1, 0)
    assert [w.id for w in zeta.workers] == ["w-1"]


def test_creating_a_cluster_twice_raises_already_exists(session: Session) -> None:
    make_cluster(session)

    with pytest.raises(AlreadyExists):
        clusters.create_cluster(session, ClusterCreate(name=CLUSTER))


@pytest.mark.parametrize("name", ["Bad_Name", "-x", "a", "x-", "9lives", "a" * 33, ""])
def test_a_cluster_name_that_breaks_the_rules_is_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="cluster names are 2-32 characters"):
        ClusterCreate(name=name)


@pytest.mark.parametrize("name", ["ab", "a" * 32, "gpu-a100-x8"])
def test_names_at_the_edges_of_the_rules_are_stored(engine: Engine, name: str) -> None:
    with Session(engine) as session:
        make_cluster(session, name)

    with Session(engine) as fresh:
        assert clusters.get_cluster(fresh, name).name == name


def test_deleting_a_cluster_with_a_queued_run_raises_cluster_busy(
    engine: Engine, session: Session
) -> None:
    make_cluster(session)
    submit(session)

    with pytest.raises(ClusterBusy, match="1 queued or active run"):
        clusters.delete_cluster(session, CLUSTER)

    with Session(engine) as fresh:
        assert clusters.get_cluster(fresh, CLUSTER).name == CLUSTER


def test_forced_delete_returns_the_live_runs_and_keeps_old_runs_without_a_cluster(
    engine: Engine, session: Session
) -> None:
    make_cluster(session)
    finished = submit(session)
    walk(session, finished, RunStatus.PREPARING, RunStatus.COMPLETED)
    queued = submit(session)
    running = submit(session)
    walk(session, running, RunStatus.RUNNING)

    live = clusters.delete_cluster(session, CLUSTER, force=True)
    clusters.finish_delete(session, CLUSTER)
    session.commit()

    assert sorted(live) == sorted([queued, running])
    with Session(engine) as fresh, pytest.raises(ClusterNotFound):
        clusters.get_cluster(fresh, CLUSTER)
    for run_id in (finished, queued, running):
        assert reload(engine, run_id).cluster is None
    assert reload(engine, finished).status == RunStatus.COMPLETED


def test_deleting_an_idle_cluster_returns_no_runs(engine: Engine, session: Session) -> None:
    make_cluster(session)

    assert clusters.delete_cluster(session, CLUSTER) == []
    clusters.finish_delete(session, CLUSTER)
    session.commit()

    with Session(engine) as fresh:
        assert fresh.get(Cluster, CLUSTER) is None


def test_a_clusters_file_creates_then_updates_clusters(
    engine: Engine, session: Session, tmp_path: Path
) -> None:
    path = tmp_path / "clusters.toml"
    path.write_text(
        '[[clusters]]\nname = "cpu"\nnodes = 2\n\n'
        '[[clusters]]\nname = "gpu"\nnodes = 1\nexecutor = "docker"\n'
    )

    assert clusters.apply_config_file(session, path) == ["cpu", "gpu"]
    session.commit()
    with Session(engine) as fresh:
        assert clusters.get_cluster(fresh, "cpu").nodes == 2
        assert clusters.get_cluster(fresh, "gpu").executor == "docker"

    path.write_text('[[clusters]]\nname = "cpu"\nnodes = 8\ndescription = "bigger"\n')
    assert clusters.apply_config_file(session, path) == ["cpu"]
    session.commit()

    with Session(engine) as fresh:
        cpu = clusters.get_cluster(fresh, "cpu")
        assert (cpu.nodes, cpu.description) == (8, "bigger")
        assert clusters.get_cluster(fresh, "gpu").nodes == 1
        assert fresh.exec(select(func.count()).select_from(Cluster)).one() == 2


# --- runs -----------------------------------------------------------------------------------


def test_submitting_to_an_unknown_cluster_raises_cluster_not_found(
    engine: Engine, session: Session
) -> None:
    spec = RunSpec(experiment="mnist", cluster="nowhere", script="train.py")

    with pytest.raises(ClusterNotFound):
        runs.submit(session, spec, DIGEST, submitted_by=None)
    session.rollback()

    with Session(engine) as fresh:
        assert fresh.exec(select(func.count()).select_from(Run)).one() == 0


def test_a_submitted_run_is_queued_with_its_timestamps_set(
    engine: Engine, session: Session
) -> None:
    make_cluster(session)

    run_id = submit(session, priority=7)

    run = reload(engine, run_id)
    assert run.id.startswith("mnist_")
    assert (run.status, run.cluster, run.priority) == (RunStatus.QUEUED, CLUSTER, 7)
    assert (run.script, run.snapshot_digest, run.dispatched_at) == ("train.py", DIGEST, None)
    assert run.not_started_at is not None
    assert run.queued_at is not None
    assert run.preparing_at is None


def test_the_experiment_is_created_on_first_submit_and_reused_after(
    engine: Engine, session: Session
) -> None:
    make_cluster(session)

    first = submit(session, experiment="mnist")
    second = submit(session, experiment="mnist")

    assert first != second
    assert reload(engine, first).experiment_id == reload(engine, second).experiment_id
    with Session(engine) as fresh:
        assert fresh.exec(select(Experiment.name)).all() == ["mnist"]


# --- lifecycle ------------------------------------------------------------------------------

HAPPY_PATH = (
    RunStatus.PREPARING,
    RunStatus.STARTING,
    RunStatus.RUNNING,
    RunStatus.FINALIZING,
    RunStatus.COMPLETED,
)


def test_a_run_walks_to_completed_stamping_each_state(engine: Engine, session: Session) -> None:
    make_cluster(session)
    run_id = submit(session)
    base = utcnow().replace(microsecond=0)

    for step, status in enumerate(HAPPY_PATH, start=1):
        moved = transition(session, run_id, status, at=base + timedelta(seconds=step))
        assert moved.status == status
    session.commit()

    run = reload(engine, run_id)
    assert run.status == RunStatus.COMPLETED
    for step, status in enumerate(HAPPY_PATH, start=1):
        stamp = getattr(run, TIMESTAMP_FIELD[status])
        assert same_instant(stamp, base + timedelta(seconds=step)), status


def test_reporting_the_current_status_again_changes_nothing(
    engine: Engine, session: Session
) -> None:
    make_cluster(session)
    run_id = submit(session)
    first = utcnow().replace(microsecond=0)
    transition(session, run_id, RunStatus.RUNNING, at=first, worker_id="w-1")
    session.commit()

    again = transition(
        session, run_id, RunStatus.RUNNING, at=first + timedelta(hours=1), worker_id="w-2"
    )
    session.commit()

    assert again.status == RunStatus.RUNNING
    run = reload(engine, run_id)
    assert same_instant(run.running_at, first)
    assert run.worker_id == "w-1"


def test_a_finished_run_cannot_run_again(engine: Engine, session: Session) -> None:
    make_cluster(session)
    run_id = submit(session)
    walk(session, run_id, *HAPPY_PATH)
    before = reload(engine, run_id)

    with pytest.raises(RunFinished):
        transition(session, run_id, RunStatus.RUNNING)
    session.commit()

    after = reload(engine, run_id)
    assert after.status == RunStatus.COMPLETED
    assert after.model_dump() == before.model_dump()


def test_a_queued_run_cannot_jump_to_finalizing(engine: Engine, session: Session) -> None:
    make_cluster(session)
    run_id = submit(session)
    before = reload(engine, run_id)

    with pytest.raises(IllegalTransition) as raised:
        transition(session, run_id, RunStatus.FINALIZING)
    session.commit()

    assert not isinstance(raised.value, RunFinished)
    after = reload(engine, run_id)
    assert after.status == RunStatus.QUEUED
    assert after.finalizing_at is None
    assert after.model_dump() == before.model_dump()


# --- admission ------------------------------------------------------------------------------


def four_runs(session: Session) -> list[str]:
    """Priorities 0, 5, 0, 5 submitted a second apart: the 5s go first, in submit order."""
    base = ago(60)
    return [
        submit(session, priority=priority, created_at=base + timedelta(seconds=i))
        for i, priority in enumerate((0, 5, 0, 5))
    ]


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


def test_the_queue_shows_positions_and_why_the_rest_wait(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    ids = four_runs(session)
    dispatch_cluster(session, celery, CLUSTER, live_workers(client))

    queue = runs.queued_runs(session, client, CLUSTER)

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

    waiting = [r for r in runs.queued_runs(session, client, CLUSTER) if r.position]
    assert waiting[0].pending_reason == "all 1 worker slot(s) busy (node limit 2)"


def test_without_a_live_worker_nothing_is_dispatched_and_the_reason_says_so(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, "another-cluster", slots=4)
    four_runs(session)

    assert dispatch_cluster(session, celery, CLUSTER, live_workers(client)) == []
    assert client.llen(keys.cluster_queue(CLUSTER)) == 0

    queue = runs.queued_runs(session, client, CLUSTER)
    assert [r.position for r in queue] == [1, 2, 3, 4]
    assert {r.pending_reason for r in queue} == {f"no worker serves cluster {CLUSTER}"}


def test_a_worker_that_left_no_longer_serves_the_queue(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    ids = four_runs(session)
    dispatch_cluster(session, celery, CLUSTER, live_workers(client))

    remove_worker(client, "w-1")

    waiting = [r for r in runs.queued_runs(session, client, CLUSTER) if r.position]
    assert [r.id for r in waiting] == [ids[0], ids[2]]
    assert {r.pending_reason for r in waiting} == {f"no worker serves cluster {CLUSTER}"}


# --- cancel ---------------------------------------------------------------------------------


def test_cancelling_a_waiting_run_ends_it_and_no_worker_can_claim_it(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    make_cluster(session)
    run_id = submit(session)

    canceled = runs.cancel(session, client, run_id)
    session.commit()

    assert canceled.status == RunStatus.CANCELED
    run = reload(engine, run_id)
    assert run.status == RunStatus.CANCELED
    assert run.canceled_at is not None
    assert control.claim_run(client, run_id, "w1") == control.ClaimResult.CANCELED


def test_cancelling_a_claimed_run_asks_its_worker_to_stop(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    make_cluster(session)
    run_id = submit(session)
    assert control.claim_run(client, run_id, "w1") == control.ClaimResult.CLAIMED

    requested = runs.cancel(session, client, run_id)
    session.commit()

    assert requested.status == RunStatus.CANCEL_REQUESTED
    run = reload(engine, run_id)
    assert run.status == RunStatus.CANCEL_REQUESTED
    assert run.cancel_requested_at is not None
    assert run.canceled_at is None
    assert control.is_cancel_requested(client, run_id)


def test_cancelling_a_run_twice_leaves_the_stop_request_in_place(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    make_cluster(session)
    run_id = submit(session)
    control.claim_run(client, run_id, "w1")
    runs.cancel(session, client, run_id)
    session.commit()

    assert runs.cancel(session, client, run_id).status == RunStatus.CANCEL_REQUESTED
    assert reload(engine, run_id).status == RunStatus.CANCEL_REQUESTED


def test_cancelling_a_run_whose_worker_is_silent_ends_it_at_once(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    make_cluster(session)
    run_id = submit(session)
    control.claim_run(client, run_id, "w1")
    walk(session, run_id, RunStatus.RUNNING, RunStatus.NOT_RESPONDING)

    runs.cancel(session, client, run_id)
    session.commit()

    assert reload(engine, run_id).status == RunStatus.CANCELED


def test_cancelling_a_completed_run_raises_run_finished(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    make_cluster(session)
    run_id = submit(session)
    walk(session, run_id, *HAPPY_PATH)

    with pytest.raises(RunFinished):
        runs.cancel(session, client, run_id)

    assert reload(engine, run_id).status == RunStatus.COMPLETED
    assert not control.is_cancel_requested(client, run_id)


# --- ingest ---------------------------------------------------------------------------------


@pytest.fixture
def ingest(engine: Engine, client: redis.Redis) -> Ingest:
    consumer = Ingest(engine, client, "test-consumer")
    consumer.ensure_group()
    return consumer


@pytest.fixture
def queued_run(session: Session) -> str:
    make_cluster(session)
    return submit(session)


def test_ingest_stores_logs_and_applies_states(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    send_to_ingest(
        client,
        [
            LogChunk(run_id=queued_run, seq=0, text="epoch 1\n"),
            LogChunk(run_id=queued_run, seq=1, text="epoch 2\n"),
            StateChanged(run_id=queued_run, status=RunStatus.RUNNING, worker_id="w-1"),
        ],
    )

    applied = ingest.process(ingest.read(block_ms=100))

    assert applied.clusters == set()
    assert log_rows(engine, queued_run) == [(0, "epoch 1\n"), (1, "epoch 2\n")]
    run = reload(engine, queued_run)
    assert (run.status, run.worker_id) == (RunStatus.RUNNING, "w-1")
    assert pending_count(client) == 0


def test_replayed_log_chunks_are_stored_once(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    chunks = [LogChunk(run_id=queued_run, seq=seq, text=f"line {seq}\n") for seq in range(3)]
    send_to_ingest(client, list(chunks))
    ingest.process(ingest.read(block_ms=100))

    send_to_ingest(client, [*chunks, LogChunk(run_id=queued_run, seq=0, text="changed\n")])
    ingest.process(ingest.read(block_ms=100))

    assert log_rows(engine, queued_run) == [(seq, f"line {seq}\n") for seq in range(3)]
    with Session(engine) as fresh:
        assert fresh.exec(select(func.count()).select_from(RunLog)).one() == 3


def test_the_log_file_has_the_logs_size_in_bytes_and_its_text_page_by_page(
    engine: Engine, queued_run: str
) -> None:
    """``user_logs/std_log.txt``: sized and read by the database of each kind, in order,
    across more chunks than one page."""
    texts = [f"line {seq} ünïcödé €\n" for seq in range(runs.LOG_PAGE * 2 + 3)]
    with Session(engine) as session:
        for seq in reversed(range(len(texts))):  # stored out of order: read back in order
            insert_log(session, LogChunk(run_id=queued_run, seq=seq, text=texts[seq]))
        session.commit()

    whole = "".join(texts).encode()
    with Session(engine) as fresh:
        assert runs.log_bytes(fresh, queued_run) == len(whole)
    assert b"".join(runs.log_text(engine, queued_run)) == whole


def test_a_terminal_state_reports_the_cluster_that_gained_a_slot(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    send_to_ingest(client, [StateChanged(run_id=queued_run, status=RunStatus.RUNNING)])
    ingest.process(ingest.read(block_ms=100))

    send_to_ingest(
        client,
        [
            StateChanged(
                run_id=queued_run, status=RunStatus.FAILED, exit_code=3, reason="exit code 3"
            )
        ],
    )
    applied = ingest.process(ingest.read(block_ms=100))

    assert applied.clusters == {CLUSTER}
    run = reload(engine, queued_run)
    assert (run.status, run.exit_code, run.failure_reason) == (RunStatus.FAILED, 3, "exit code 3")


def test_an_illegal_report_is_ignored_without_losing_the_rest_of_the_batch(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    walk(session, queued_run, *HAPPY_PATH)
    send_to_ingest(
        client,
        [
            StateChanged(run_id=queued_run, status=RunStatus.RUNNING),
            StateChanged(run_id="no-such-run", status=RunStatus.RUNNING),
            LogChunk(run_id=queued_run, seq=0, text="late output\n"),
        ],
    )

    ingest.process(ingest.read(block_ms=100))

    assert reload(engine, queued_run).status == RunStatus.COMPLETED
    assert log_rows(engine, queued_run) == [(0, "late output\n")]
    assert pending_count(client) == 0


def test_a_malformed_entry_is_acknowledged_and_dropped(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    client.xadd(keys.INGEST_STREAM, {"v": "1", "type": "nope", "data": "{}"})
    client.xadd(keys.INGEST_STREAM, {"v": "1", "type": "log", "data": "{not json"})
    send_to_ingest(client, [LogChunk(run_id=queued_run, seq=0, text="still here\n")])

    raw = ingest.read(block_ms=100)
    ingest.process(raw)

    assert len(raw) == 3
    assert log_rows(engine, queued_run) == [(0, "still here\n")]
    assert pending_count(client) == 0


def test_entries_a_consumer_never_acknowledged_are_reclaimed_by_another(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    send_to_ingest(
        client,
        [
            LogChunk(run_id=queued_run, seq=0, text="orphaned\n"),
            StateChanged(run_id=queued_run, status=RunStatus.RUNNING),
        ],
    )
    assert len(ingest.read(block_ms=100)) == 2  # read, then the consumer "dies"
    assert pending_count(client) == 2

    survivor = Ingest(engine, client, "other-consumer")
    reclaimed = survivor.reclaim(min_idle_ms=0)
    survivor.process(reclaimed)

    assert len(reclaimed) == 2
    assert log_rows(engine, queued_run) == [(0, "orphaned\n")]
    assert reload(engine, queued_run).status == RunStatus.RUNNING
    assert pending_count(client) == 0
    assert survivor.reclaim(min_idle_ms=0) == []


def test_a_log_chunk_for_an_unknown_run_is_dropped_without_blocking_the_stream(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    send_to_ingest(
        client,
        [
            LogChunk(run_id="no-such-run", seq=0, text="orphan\n"),
            LogChunk(run_id=queued_run, seq=0, text="kept\n"),
        ],
    )

    ingest.process(ingest.read(block_ms=100))

    assert log_rows(engine, queued_run) == [(0, "kept\n")]
    assert pending_count(client) == 0


# --- watchdog -------------------------------------------------------------------------------


def silent_running_run(session: Session, worker: str = "w-lost") -> str:
    """A Running run whose worker last reported a minute ago (no alive key in Redis)."""
    run_id = submit(session)
    transition(session, run_id, RunStatus.PREPARING, worker_id=worker)
    walk(session, run_id, RunStatus.RUNNING)
    set_columns(session, run_id, dispatched_at=ago(61), preparing_at=ago(60), running_at=ago(60))
    return run_id


def test_a_silent_running_run_becomes_not_responding_then_failed(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session)
    run_id = silent_running_run(session)
    settings = fast_watchdog()

    sweep_runs(session, client, celery, settings)
    run = reload(engine, run_id)
    assert run.status == RunStatus.NOT_RESPONDING
    assert run.not_responding_at is not None

    set_columns(session, run_id, not_responding_at=ago(30))
    sweep_runs(session, client, celery, settings)

    run = reload(engine, run_id)
    assert run.status == RunStatus.FAILED
    assert run.failure_reason is not None
    assert "node lost" in run.failure_reason
    assert "w-lost" in run.failure_reason


def test_a_run_not_responding_for_less_than_failed_after_is_kept(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session)
    run_id = silent_running_run(session)
    settings = fast_watchdog(failed_after=600)

    sweep_runs(session, client, celery, settings)
    sweep_runs(session, client, celery, settings)

    assert reload(engine, run_id).status == RunStatus.NOT_RESPONDING


def test_a_run_whose_alive_key_exists_is_left_alone(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session)
    run_id = silent_running_run(session)
    client.set(keys.run_alive(run_id), "w", ex=30)

    sweep_runs(session, client, celery, fast_watchdog())

    run = reload(engine, run_id)
    assert run.status == RunStatus.RUNNING
    assert run.not_responding_at is None


def test_a_just_started_run_gets_a_grace_period_before_its_first_heartbeat(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session)
    run_id = submit(session)
    set_columns(session, run_id, dispatched_at=ago(1))
    walk(session, run_id, RunStatus.PREPARING)

    sweep_runs(session, client, celery, fast_watchdog(not_responding_after=600))

    assert reload(engine, run_id).status == RunStatus.PREPARING


def test_a_not_responding_run_recovers_when_its_worker_is_heard_again(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session)
    run_id = silent_running_run(session)
    settings = fast_watchdog(failed_after=600)
    sweep_runs(session, client, celery, settings)
    assert reload(engine, run_id).status == RunStatus.NOT_RESPONDING

    client.set(keys.run_alive(run_id), "w-lost", ex=30)
    sweep_runs(session, client, celery, settings)

    assert reload(engine, run_id).status == RunStatus.RUNNING


def test_a_run_lost_a_second_time_gets_the_full_failed_after_grace_again(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session)
    run_id = submit(session)
    # History: running since 10 min ago, silent 5 min ago, heard again 4 min ago.
    set_columns(session, run_id, dispatched_at=ago(601))
    transition(session, run_id, RunStatus.RUNNING, at=ago(600), worker_id="w-flaky")
    transition(session, run_id, RunStatus.NOT_RESPONDING, at=ago(300))
    walk(session, run_id, RunStatus.RUNNING)
    settings = fast_watchdog(failed_after=60)

    sweep_runs(session, client, celery, settings)  # silent again: NotResponding now
    assert reload(engine, run_id).status == RunStatus.NOT_RESPONDING
    sweep_runs(session, client, celery, settings)  # only ~0 s into this silence

    assert reload(engine, run_id).status == RunStatus.NOT_RESPONDING


def test_runs_no_worker_holds_are_not_watched(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    """Children and interactive runs have no heartbeat: silence is not node loss."""
    make_cluster(session)
    run_id = submit(session)
    transition(session, run_id, RunStatus.RUNNING, at=ago(600))

    sweep_runs(session, client, celery, fast_watchdog())

    assert reload(engine, run_id).status == RunStatus.RUNNING


def test_a_new_consumer_applies_a_killed_ones_entries_before_newer_ones(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    """Points keep their order even when the consumer dies holding a batch."""

    def points(first: int, count: int) -> TrackingBatch:
        events = [
            [seq, {"r": queued_run, "k": "m", "n": "step", "v": seq, "t": 0.0}]
            for seq in range(first, first + count)
        ]
        return TrackingBatch(run_id=queued_run, origin=queued_run, producer="p", events=events)

    send_to_ingest(client, [points(0, 100)])
    assert len(ingest.read(block_ms=100)) == 1  # read, then the consumer is killed
    send_to_ingest(client, [points(100, 100)])  # the worker goes on logging

    successor = Ingest(engine, client, "successor")
    successor.take_over()
    successor.process(successor.read(block_ms=100))

    with Session(engine) as fresh:
        ordered = fresh.exec(
            select(MetricPoint.value)
            .where(MetricPoint.run_id == queued_run, MetricPoint.name == "step")
            .order_by(col(MetricPoint.idx))
        ).all()
    assert ordered == [float(i) for i in range(200)]
    assert pending_count(client) == 0


def test_long_series_are_summarised_as_they_arrive_and_read_back_downsampled(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    """Summaries stay equal to the points under replays, and a downsampled read through
    them keeps the range's first, last and extreme points."""
    total = 9 * ROLLUP_SPAN + 100
    values = [math.sin(i / 300) for i in range(total)]
    values[4321] = 50.0
    values[7777] = -50.0
    chunk = 700  # spans straddle batches
    batches = [
        TrackingBatch(
            run_id=queued_run,
            origin=queued_run,
            producer="p",
            events=[[n, {"r": queued_run, "k": "l", "n": "wave", "v": values[i : i + chunk]}]],
        )
        for n, i in enumerate(range(0, total, chunk))
    ]
    send_to_ingest(client, batches)
    send_to_ingest(client, batches[3:5])  # a replay changes nothing
    ingest.process(ingest.read(block_ms=100))
    ingest.process(ingest.read(block_ms=100))

    with Session(engine) as fresh:
        stored = fresh.exec(
            select(MetricRollup)
            .where(MetricRollup.run_id == queued_run)
            .order_by(col(MetricRollup.bucket))
        ).all()
        assert [r.n for r in stored] == [ROLLUP_SPAN] * 9 + [100]
        for row in stored:
            span = values[row.bucket * ROLLUP_SPAN : (row.bucket + 1) * ROLLUP_SPAN]
            assert (row.first_idx, row.last_idx) == (
                row.bucket * ROLLUP_SPAN,
                row.bucket * ROLLUP_SPAN + len(span) - 1,
            )
            assert (row.min_value, row.max_value) == (min(span), max(span))

        # (7986, 8961): a zoom that crosses one span boundary and holds no whole span.
        ranges = [(None, None, 16), (1000, 8000, 12), (0, 3000, 400), (7986, 8961, 400)]
        for start, end, max_points in ranges:
            found = tracking.history(
                fresh, queued_run, "wave", start=start, end=end, max_points=max_points
            )
            low, high = start or 0, total - 1 if end is None else end
            part = values[low : high + 1]
            assert found.count == len(part) and found.downsampled
            assert len(found.points) <= max_points
            assert found.points[0] == [low, part[0]] and found.points[-1] == [high, part[-1]]
            ys = [y for _, y in found.points]
            assert max(ys) == max(part) and min(ys) == min(part)
            assert all(low <= x <= high for x, _ in found.points)

        whole = tracking.history(fresh, queued_run, "wave", start=7986, end=8961, max_points=1200)
        assert whole.count == 976 and not whole.downsampled
        assert whole.points == [[i, values[i]] for i in range(7986, 8962)]


def test_a_run_token_lives_exactly_as_long_as_its_attempt(engine: Engine) -> None:
    """Valid while its attempt is handed over or running; dead once the run is requeued
    (node lost), on the next attempt, and at the end."""
    key = b"k" * 32
    with Session(engine) as session:
        make_cluster(session)
        run_id = submit(session)
        token = tokens.mint_run_token(key, run_id, 1)

        def set_run(**values: Any) -> None:
            session.execute(sqlalchemy.update(Run).where(Run.id == run_id).values(**values))
            session.commit()

        def holds() -> str:
            try:
                return tokens.authenticate(session, key, token).name
            except Unauthorized as exc:
                return exc.message

        set_run(attempt=1, dispatched_at=utcnow())  # handed to a worker
        assert holds() == f"run:{run_id}"
        set_run(status=RunStatus.RUNNING)
        assert holds() == f"run:{run_id}"
        set_run(status=RunStatus.QUEUED, dispatched_at=None)  # requeued after node loss
        assert "waiting to start again" in holds()
        set_run(attempt=2, dispatched_at=utcnow())
        assert "attempt 2" in holds()
        token = tokens.mint_run_token(key, run_id, 2)
        assert holds() == f"run:{run_id}"
        set_run(status=RunStatus.COMPLETED)
        assert "has ended" in holds()
        forged = tokens.mint_run_token(b"x" * 32, run_id, 2)
        with pytest.raises(Unauthorized, match="invalid run token"):
            tokens.authenticate(session, key, forged)


def queued_in_bulk(session: Session, count: int) -> list[str]:
    """``count`` more waiting runs like one submitted run, inserted in one statement (as a
    busy cluster's queue holds them), in queue order after it."""
    first = reload(session.get_bind(), submit(session))  # type: ignore[arg-type]
    row = first.model_dump()
    ids = [f"{first.id}-{i:05d}" for i in range(count)]
    session.execute(
        sqlalchemy.insert(Run),
        [{**row, "id": run_id, "created_at": first.created_at} for run_id in ids],
    )
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

    queue = runs.queued_runs(session, client, CLUSTER)  # GET /clusters/{name}/runs
    places = runs.queue_places(session, client, [last])  # GET /runs
    described = runs.describe(session, client, last)  # GET /runs/{id}

    assert len(queue) == len(ids)
    assert (queue[0].id, queue[0].pending_reason) == (ids[0], "handed to a worker; starting")
    assert (queue[1].position, queue[1].pending_reason) == (1, "all 1 node(s) busy")
    reason = f"waiting behind {waiting - 1} run(s); all 1 node(s) busy"
    assert places[last.id] == (waiting, reason)
    assert (described.position, described.pending_reason) == (waiting, reason)


def test_two_dispatchers_failing_the_same_run_write_its_line_once(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    """A run that cannot start is failed with a line in its log. Two schedulers may both
    read it as waiting: the second finds the first one's line there, and goes on."""
    make_cluster(session, nodes=1)
    heartbeat(client, CLUSTER, slots=1)
    run_id = submit(session)
    set_columns(session, run_id, environment={"docker": {"enabled": True}})
    with Session(engine) as other:  # the other scheduler got as far as the line
        insert_log(other, LogChunk(run_id=run_id, seq=LOG_SEQ_STRIDE, text="its line\n"))
        other.commit()

    assert dispatch_cluster(session, celery, CLUSTER, live_workers(client)) == []

    run = reload(engine, run_id)
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith("cannot start: this run asks for a Docker container")
    assert log_rows(engine, run_id) == [(LOG_SEQ_STRIDE, "its line\n")]
