"""The scheduler process: ingest, admission and watchdog in one event loop.

It blocks on the ingest stream, so a submit, a worker coming up or a run ending (each an
entry on that stream) is acted on at once; a sweep every ``sweep_interval`` seconds is the
safety net (heartbeats expiring, entries left pending by a crashed consumer).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import redis
from celery import Celery
from sqlmodel import Session, select

from protocol import keys
from protocol.celery_app import make_celery
from protocol.settings import Settings
from protocol.workers import WorkerInfo, live_workers
from scheduler import admission, watchdog
from scheduler.ingest import Ingest
from store.announcements import Announcements
from store.clusters import apply_config_file
from store.db import make_engine, migrate, session_scope
from store.models import Cluster

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.resolved_database_url)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.celery = make_celery(settings.redis_url)
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        self.ingest = Ingest(self.engine, self.redis, consumer, limits=settings.tracking_limits)
        self.stopping = threading.Event()

    def prepare(self) -> None:
        migrate(self.engine)
        if self.settings.clusters_file:
            with session_scope(self.engine) as session:
                apply_config_file(session, self.settings.clusters_file)
        self.ingest.ensure_group()
        self.ingest.take_over()

    def run_forever(self) -> None:
        self.prepare()
        log.info("scheduler running (database %s)", self.engine.url.render_as_string())
        next_sweep = 0.0
        while not self.stopping.is_set():
            try:
                next_sweep = self.step(next_sweep)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("redis unavailable (%s); retrying", exc)
                self.stopping.wait(1.0)
            except Exception:
                # A daemon that dies on one bad moment leaves every cluster stuck; log, go on.
                log.exception("scheduler step failed; retrying")
                self.stopping.wait(1.0)

    def step(self, next_sweep: float) -> float:
        block = max(int((next_sweep - time.monotonic()) * 1000), 1)
        applied = self.ingest.process(self.ingest.read(block_ms=min(block, 1000)))
        clusters = set(applied.clusters)
        if applied.wake_all or time.monotonic() >= next_sweep:
            clusters |= self.sweep()
            next_sweep = time.monotonic() + self.settings.sweep_interval
        if clusters:
            self.dispatch(clusters)
        return next_sweep

    def sweep(self) -> set[str]:
        """Safety net: reclaim orphaned entries, watch heartbeats, look at every cluster."""
        self.redis.set(
            keys.SCHEDULER_ALIVE,
            socket.gethostname(),
            px=int(max(self.settings.sweep_interval * 5, 5) * 1000),
        )
        self.ingest.process(self.ingest.reclaim(int(self.settings.ingest_reclaim_after * 1000)))
        self.ingest.trim()
        with Session(self.engine) as session:
            sweep_runs(session, self.redis, self.celery, self.settings)
            return set(session.exec(select(Cluster.name)))

    def dispatch(self, clusters: set[str]) -> None:
        workers = live_workers(self.redis)
        with Session(self.engine) as session:
            for name in sorted(clusters):
                dispatch_cluster(session, self.celery, name, workers)

    def stop(self) -> None:
        self.stopping.set()


# The loop's units of work: each commits once, then acts on other processes.


def dispatch_cluster(
    session: Session, celery: Celery, cluster: str, workers: list[WorkerInfo]
) -> list[str]:
    """Hand as many waiting runs to the cluster's queue as it has free slots; returns
    their ids. Each run is recorded as handed over (committed) before its task is sent: a
    cancel that committed first wins (admission marks only runs still waiting), and a
    worker never holds a task whose run the database shows waiting."""
    assignments = admission.admit(session, cluster, workers)
    session.commit()
    for sent, assignment in enumerate(assignments):
        try:
            admission.send(celery, assignment)
        except Exception:
            # The broker failed: the runs after this one wait again at once. This one may
            # or may not have reached the broker; the watchdog sends it again if no worker
            # claims it within dispatch_timeout (a worker takes one attempt only once).
            admission.take_back(session, assignments[sent + 1 :])
            session.commit()
            raise
    return [a.run_id for a in assignments]


def sweep_runs(session: Session, client: redis.Redis, celery: Celery, settings: Settings) -> None:
    """The watchdog's pass: commit what it decided, then tell live followers and send the
    runs no worker claimed again."""
    news = Announcements()
    lost = watchdog.sweep(session, client, settings, news)
    session.commit()
    news.send(client)
    for assignment in lost:
        admission.send(celery, assignment)
