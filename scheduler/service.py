"""The scheduler process. Any number may run (``scheduler.leadership``); the one that
leads consumes ingest, admits and runs the watchdog, the others stand by.

The leader blocks on the ingest stream, so a submit, a worker coming up or a run ending
(each an entry on that stream) is acted on at once; a sweep every ``sweep_interval``
seconds is the safety net (heartbeats expiring, entries left pending). Every
``leader_renew_seconds`` each scheduler renews, or tries to take, the lease.

Why only the leader consumes ingest: a run's reports must be applied in the order its
worker sent them (Preparing before Running before Completed); two consumers of one group
apply neighbouring entries concurrently and out of order, and a report that arrives before
the one it follows is refused for good (seen: a run left Running after it completed). A new
leader therefore first applies every entry its predecessors left pending, oldest first,
then reads on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from datetime import datetime

import redis
from celery import Celery
from sqlmodel import Session, select

from protocol import keys
from protocol.celery_app import make_celery
from protocol.messages import RunAssignment
from protocol.replies import as_text
from protocol.settings import Settings
from protocol.workers import WorkerInfo, live_workers, server_time
from scheduler import admission, watchdog
from scheduler.ingest import Ingest
from scheduler.leadership import Lease, NotLeader
from store import fence as db_fence
from store.announcements import Announcements
from store.clusters import apply_config_file
from store.db import make_engine, migrate, session_scope
from store.models import Cluster

log = logging.getLogger(__name__)

# Broker commands buffered before a flush while sending an admission's tasks (``send_all``).
SEND_BATCH = 1000
STEPPED_DOWN = "stepped down, following"  # what the log says when a leader stops leading
# PostgreSQL ends a leader's session that sits this long inside a fenced transaction (it
# was paused): its row lock on the fence would otherwise hold up the next leader.
STALLED_AFTER_MS = 5000


class Scheduler:
    def __init__(self, settings: Settings, name: str | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings.resolved_database_url)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.celery = make_celery(settings.redis_url)
        # One name per process, its ingest consumer's and its lease's: another scheduler,
        # on this host or another, never shares it.
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.ingest = Ingest(self.engine, self.redis, self.name, limits=settings.tracking_limits)
        self.lease = Lease(self.redis, self.name, settings.leader_lease_seconds)
        self.stopping = threading.Event()
        self.next_tick = 0.0
        self.next_sweep = 0.0

    def prepare(self) -> None:
        # Schedulers starting together migrate and apply the clusters file one at a time.
        with self.redis.lock(f"{keys.PREFIX}:scheduler:prepare", timeout=300):
            migrate(self.engine)
            if self.settings.clusters_file:
                with session_scope(self.engine) as session:
                    apply_config_file(session, self.settings.clusters_file)
        self.ingest.ensure_group()

    def run_forever(self) -> None:
        self.prepare()
        log.info(
            "scheduler %s running (database %s)", self.name, self.engine.url.render_as_string()
        )
        try:
            while not self.stopping.is_set():
                try:
                    self.step()
                except NotLeader:
                    log.warning("scheduler %s: a later leader wrote; %s", self.name, STEPPED_DOWN)
                    self.lease.step_down()
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning("redis unavailable (%s); retrying", exc)
                    self.stopping.wait(1.0)
                except Exception:
                    # A daemon that dies on one bad moment leaves every cluster stuck; log, go on.
                    log.exception("scheduler step failed; retrying")
                    self.stopping.wait(1.0)
        finally:
            self.leave()

    def step(self) -> None:
        if time.monotonic() >= self.next_tick:
            self.next_tick = time.monotonic() + self.settings.leader_renew_seconds
            self.tick()
        until = min(self.next_tick, self.next_sweep) - time.monotonic()
        if not self.lease.held():
            self.stopping.wait(max(self.next_tick - time.monotonic(), 0))
            return
        applied = self.ingest.process(self.ingest.read(block_ms=max(int(until * 1000), 1)))
        clusters = set(applied.clusters)
        if applied.wake_all or time.monotonic() >= self.next_sweep:
            clusters |= self.sweep()
            self.next_sweep = time.monotonic() + self.settings.sweep_interval
        if clusters:
            self.dispatch(clusters)

    def tick(self) -> None:
        """Say this scheduler is alive; renew or take the lease, and on taking it apply what
        earlier leaders left pending."""
        alive_ms = int(max(self.settings.leader_lease_seconds * 5, 15) * 1000)
        self.redis.set(keys.scheduler_alive(socket.gethostname()), self.name, px=alive_ms)
        was = self.lease.token
        if self.lease.tick() and self.lease.token != was:
            log.info("scheduler %s leads (fencing token %d)", self.name, self.lease.token)
            self.take_over()
            self.next_sweep = 0.0  # look at everything at once
        elif was is not None and self.lease.token is None:
            log.warning("scheduler %s lost the lease; %s", self.name, STEPPED_DOWN)

    def take_over(self) -> None:
        """Apply every entry earlier leaders read but never acknowledged (killed, or paused
        and replaced), oldest first, before anything newer; then forget those consumers.
        (A paused one that wakes may apply its batch again: replays change nothing.)"""
        self.ingest.take_over()
        for consumer in self.redis.xinfo_consumers(keys.INGEST_STREAM, keys.INGEST_GROUP):
            name = as_text(consumer["name"])
            if name != self.name and not int(consumer["pending"]):
                self.redis.xgroup_delconsumer(keys.INGEST_STREAM, keys.INGEST_GROUP, name)

    def sweep(self) -> set[str]:
        """The leader's safety net: watch heartbeats, look at every cluster."""
        self.redis.set(
            keys.SCHEDULER_ALIVE,
            self.name,
            px=int(max(self.settings.sweep_interval * 5, 5) * 1000),
        )
        self.ingest.process(self.ingest.reclaim(int(self.settings.ingest_reclaim_after * 1000)))
        self.ingest.trim()
        with Session(self.engine) as session:
            sweep_runs(session, self.redis, self.celery, self.settings, self.fence())
            return set(session.exec(select(Cluster.name)))

    def dispatch(self, clusters: set[str]) -> None:
        workers = live_workers(self.redis)
        with Session(self.engine) as session:
            for name in sorted(clusters):
                # Stamped by Redis' clock, the one the watchdog measures silence by.
                now = server_time(self.redis)
                dispatch_cluster(session, self.celery, name, workers, self.fence(), now=now)

    def fence(self) -> int:
        """The token this scheduler's transactions carry; NotLeader once the lease lapsed."""
        if not self.lease.held() or self.lease.token is None:
            raise NotLeader(self.name)
        return self.lease.token

    def stop(self) -> None:
        self.stopping.set()

    def leave(self) -> None:
        """On a clean stop: hand the lease over at once."""
        with contextlib.suppress(redis.RedisError):
            self.lease.step_down()


# The loop's units of work: each commits once, then acts on other processes.


def dispatch_cluster(
    session: Session,
    celery: Celery,
    cluster: str,
    workers: list[WorkerInfo],
    fence: int | None = None,
    *,
    now: datetime | None = None,
) -> list[str]:
    """Hand as many waiting runs to the cluster's queue as it has free slots; returns
    their ids. Each run is recorded as handed over (committed) before its task is sent: a
    cancel that committed first wins (admission marks only runs still waiting), and a
    worker never holds a task whose run the database shows waiting. With ``fence`` (the
    leader's token) nothing is decided unless the fence still admits it (``hold_fence``).
    ``now`` (Redis' time, read once per admission) stamps the runs handed over."""
    hold_fence(session, fence)
    assignments = admission.admit(session, cluster, workers, now)
    session.commit()
    failure = send_all(celery, assignments)
    if failure is not None:
        # The broker failed: the runs not yet tried wait again at once. One whose send
        # failed may or may not have reached the broker; the watchdog sends it again if no
        # worker claims it within dispatch_timeout (a worker takes one attempt only once).
        error, untried = failure
        hold_fence(session, fence)
        admission.take_back(session, untried)
        session.commit()
        raise error
    return [a.run_id for a in assignments]


def send_all(
    celery: Celery, assignments: list[RunAssignment]
) -> tuple[Exception, list[RunAssignment]] | None:
    """Send every assignment's task through one producer, batched (kombu's
    ``Producer.batch``: on Redis one pipeline, one round trip for the whole admission
    instead of two per task: the task and its task-sent event). Returns None, or the error
    and the assignments never tried; a tried one may or may not have reached the broker
    (the watchdog sends it again if no worker claims it within dispatch_timeout)."""
    tried = 0
    error: Exception | None = None
    try:
        with celery.producer_or_acquire() as producer:
            batch = getattr(producer, "batch", None)
            with batch(max_size=SEND_BATCH) if batch else contextlib.nullcontext():
                for assignment in assignments:
                    tried += 1
                    try:
                        admission.send(celery, assignment, producer)
                    except Exception as exc:
                        error = exc  # the batch still flushes the ones before it
                        break
    except Exception as exc:  # the flush failed: any of them may have reached the broker
        error = error or exc
    return None if error is None else (error, assignments[tried:])


def sweep_runs(
    session: Session,
    client: redis.Redis,
    celery: Celery,
    settings: Settings,
    fence: int | None = None,
) -> None:
    """The watchdog's pass: commit what it decided, then tell live followers and send the
    runs no worker claimed again (fenced like ``dispatch_cluster``)."""
    hold_fence(session, fence)
    news = Announcements()
    lost = watchdog.sweep(session, client, settings, news)
    session.commit()
    news.send(client)
    for assignment in lost:
        admission.send(celery, assignment)


def hold_fence(session: Session, fence: int | None) -> None:
    """Begin the unit of work by raising the database fence to the leader's token (its
    first write, so it also serializes it against any other leader's); a later leader's
    token there means this one was paused past its lease: roll back, NotLeader. None: an
    unfenced caller (a single scheduler in tests)."""
    if fence is None:
        return
    if not db_fence.hold(session, fence, stalled_after_ms=STALLED_AFTER_MS):
        session.rollback()
        raise NotLeader(f"fence holds a later token than {fence}")
