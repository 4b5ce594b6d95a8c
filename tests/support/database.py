"""Helpers the store tests share: clusters and runs written through the store's own
services, runs moved through their states, rows read back through a session of their own,
and worker heartbeats in the real Redis.

Each helper commits, as the route or loop that owns the unit of work would: the next read,
through another session, sees what it did."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import Engine
from sqlmodel import Session, col, select, update

from protocol import keys
from protocol.settings import Settings
from protocol.streams import ingest_shards
from protocol.workers import WorkerInfo, publish_heartbeat
from runyard.status import RunStatus
from store import clusters, runs
from store.db import as_utc
from store.lifecycle import transition
from store.models import Cluster, ClusterCreate, Run, RunLog, RunSpec, utcnow

DIGEST = "sha256:" + "0" * 64
CLUSTER = "gpu-a"


def ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


def same_instant(stored: datetime | None, expected: datetime) -> bool:
    """SQLite hands back naive UTC, PostgreSQL aware datetimes; compare the instant."""
    return as_utc(stored) == expected


def make_cluster(session: Session, name: str = CLUSTER, nodes: int = 1, **fields: Any) -> Cluster:
    cluster = clusters.create_cluster(session, ClusterCreate(name=name, nodes=nodes, **fields))
    session.commit()
    return cluster


def queue_run(
    session: Session,
    cluster: str = CLUSTER,
    *,
    experiment: str = "mnist",
    priority: int = 0,
    created_at: datetime | None = None,
) -> str:
    """Submit a run through the store's own service (no API, no snapshot) and commit: it
    waits in the queue. ``created_at`` pins its place there."""
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
    """A live worker serving ``served``. It stays live for the whole test however slow the
    machine (each test starts on an emptied Redis), and leaves only by ``remove_worker``."""
    info = WorkerInfo(id=worker, hostname="node-1", clusters=list(served), slots=slots)
    publish_heartbeat(client, info, ttl=24 * 3600)
    return info


def pending_count(client: redis.Redis) -> int:
    """Ingest entries read and not yet acknowledged, over every ingest stream."""
    streams = keys.ingest_streams(ingest_shards())
    return sum(int(client.xpending(s, keys.INGEST_GROUP)["pending"]) for s in streams)


def fast_watchdog(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "not_responding_after": 1,
        "failed_after": 1,
        "dispatch_timeout": 3600,
        **overrides,
    }
    return Settings(**values)


HAPPY_PATH = (
    RunStatus.PREPARING,
    RunStatus.STARTING,
    RunStatus.RUNNING,
    RunStatus.FINALIZING,
    RunStatus.COMPLETED,
)


def four_runs(session: Session) -> list[str]:
    """Priorities 0, 5, 0, 5 submitted a second apart: the 5s go first, in submit order."""
    base = ago(60)
    return [
        queue_run(session, priority=priority, created_at=base + timedelta(seconds=i))
        for i, priority in enumerate((0, 5, 0, 5))
    ]
