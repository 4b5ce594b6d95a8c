"""The scheduler process. Any number may run (``scheduler.leadership``): every one consumes
a share of the ingest; the one that leads also admits and runs the watchdog.

The ingest is sharded by run id (``protocol.streams``, ``Settings.ingest_shards``): every
entry about a run goes to one shard, and each shard is consumed by one scheduler at a time,
under a lease of its own renewed with the leader's every ``leader_renew_seconds``. A run's
reports must be applied in the order its worker sent them (Preparing before Running before
Completed; a report that arrives before the one it follows is refused for good), and one
consumer per shard keeps that order. Each live scheduler holds about ceil(shards / live
schedulers) shards; one holding more gives the surplus back at renewal for a newcomer. On
taking a shard, a scheduler first applies every entry an earlier holder read but never
acknowledged, oldest first, then reads on. One that loses a shard (paused past its lease)
stops reading it; a batch it applies again on waking changes nothing (replays are
harmless: log chunks unique per (run, seq), reports refused if illegal, tracking events
numbered per producer).

Wakes (a submit, a worker coming up) go to a stream only the leader reads, in the same
blocking read as its shards, so admission acts on them at once; a scheduler that applies a
run's end while not leading forwards a wake there. A sweep every ``sweep_interval`` seconds
is the leader's safety net (heartbeats expiring, entries left pending). Entries left in the
single stream of before sharding (``keys.INGEST_STREAM``) are applied by the leader, first.
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

from protocol import control, keys, pending_reasons
from protocol.celery_app import make_celery
from protocol.messages import RunAssignment, Wake
from protocol.settings import Settings
from protocol.streams import agree_on_shards, send_to_ingest
from protocol.workers import WorkerInfo, live_workers, server_time
from scheduler import admission, watchdog
from scheduler.ingest import Ingest
from scheduler.leadership import Lease, NotLeader, Shards, leave_members, live_schedulers
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
        # One name per process, its ingest consumer's and its leases': another scheduler,
        # on this host or another, never shares it.
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.ingest = Ingest(
            self.engine,
            self.redis,
            self.name,
            limits=settings.tracking_limits,
            shards=settings.ingest_shards,
        )
        self.lease = Lease(self.redis, self.name, settings.leader_lease_seconds)
        self.shards = Shards(
            self.redis, self.name, settings.ingest_shards, settings.leader_lease_seconds
        )
        self.ingest.read_from([])  # nothing until a shard's lease is taken
        self.stopping = threading.Event()
        self.next_tick = 0.0
        self.next_sweep = 0.0
        # Clusters to admit again at a time (monotonic) even if nothing happens: a run
        # waits for a victim to reach the cluster's minimum runtime (``Admission.wake_at``).
        self.wake_at: dict[str, float] = {}

    def prepare(self) -> None:
        # Schedulers starting together migrate and apply the clusters file one at a time.
        agree_on_shards(self.redis, self.settings.ingest_shards)
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
                    self.step_or_follow()
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning("redis unavailable (%s); retrying", exc)
                    self.stopping.wait(1.0)
                except Exception:
                    # A daemon that dies on one bad moment leaves every cluster stuck; log, go on.
                    log.exception("scheduler step failed; retrying")
                    self.stopping.wait(1.0)
        finally:
            self.leave()

    def step_or_follow(self) -> None:
        """One step; a leader that learns a later one wrote steps down and follows. Giving
        the lease back talks to Redis too: Redis gone or still loading its data then (a
        restart) is retried by the caller like any step's, never ends the scheduler."""
        try:
            self.step()
        except NotLeader:
            log.warning("scheduler %s: a later leader wrote; %s", self.name, STEPPED_DOWN)
            self.lease.step_down()
            self.ingest.read_from(self.streams())

    def streams(self) -> list[str]:
        """What this scheduler reads now: its shards; the leader also the wakes, and the
        stream of before sharding (first: what an older producer still put there was sent
        before what the same read finds on the shards)."""
        streams = [keys.ingest_shard(shard) for shard in self.shards.held()]
        if self.lease.held():
            streams = [keys.INGEST_STREAM, *streams, keys.INGEST_WAKE_STREAM]
        return streams

    def step(self) -> None:
        if time.monotonic() >= self.next_tick:
            self.next_tick = time.monotonic() + self.settings.leader_renew_seconds
            self.tick()
        leading = self.lease.held()
        soonest = min([self.next_sweep, *self.wake_at.values()])
        until = (min(self.next_tick, soonest) if leading else self.next_tick) - (time.monotonic())
        if not self.ingest.streams:
            self.stopping.wait(max(self.next_tick - time.monotonic(), 0))
            return
        reads = self.ingest.read(block_ms=max(int(until * 1000), 1))
        # A scheduler paused past a lease between its read and now leaves what it read
        # from that stream pending; the stream's new holder applies it.
        applied = self.ingest.process(reads.only(self.streams()))
        clusters, wake_all = set(applied.clusters), applied.wake_all
        if not self.lease.held():
            if clusters or wake_all:  # runs ended: the leader admits in their place
                self.forward_wakes(clusters, wake_all)
            return
        if wake_all or time.monotonic() >= self.next_sweep:
            clusters |= self.sweep()
            self.next_sweep = time.monotonic() + self.settings.sweep_interval
        clusters |= {c for c, at in self.wake_at.items() if at <= time.monotonic()}
        if clusters:
            self.dispatch(clusters)

    def forward_wakes(self, clusters: set[str], wake_all: bool) -> None:
        wakes = [Wake(cluster=c) for c in sorted(clusters)] + ([Wake()] if wake_all else [])
        send_to_ingest(self.redis, wakes, shards=self.settings.ingest_shards)

    def tick(self) -> None:
        """Say this scheduler is alive; renew or take the lease, and on taking it apply what
        earlier leaders left pending; renew, balance and take ingest shards likewise."""
        alive_ms = int(max(self.settings.leader_lease_seconds * 5, 15) * 1000)
        self.redis.set(keys.scheduler_alive(socket.gethostname()), self.name, px=alive_ms)
        was = self.lease.token
        if self.lease.tick() and self.lease.token != was:
            log.info("scheduler %s leads (fencing token %d)", self.name, self.lease.token)
            # Before any shard: what the upgrade left in the old stream, then the wakes.
            self.ingest.take_over([keys.INGEST_STREAM, keys.INGEST_WAKE_STREAM])
            self.next_sweep = 0.0  # look at everything at once
        elif was is not None and self.lease.token is None:
            log.warning("scheduler %s lost the lease; %s", self.name, STEPPED_DOWN)
        self.balance()

    def balance(self) -> None:
        """Renew this scheduler's shards, give back its surplus, take its share; apply what a
        shard's earlier holder left pending before reading it."""
        live = live_schedulers(self.redis, self.name, self.settings.leader_lease_seconds)
        taken, let_go = self.shards.tick(live)
        if let_go:
            log.info("scheduler %s lets go of ingest shards %s", self.name, let_go)
        if taken:
            log.info("scheduler %s takes ingest shards %s", self.name, taken)
        taken_streams = [keys.ingest_shard(shard) for shard in taken]
        self.ingest.read_from(self.streams())  # a shard let go is read no more
        self.ingest.take_over(taken_streams)  # what its earlier holder left, before anything
        for stream in self.ingest.streams:
            if stream not in taken_streams:
                self.ingest.claim_strays(stream, int(self.settings.ingest_reclaim_after * 1000))
        self.ingest.trim(self.ingest.streams)

    def sweep(self) -> set[str]:
        """The leader's safety net: watch heartbeats, look at every cluster."""
        self.redis.set(
            keys.SCHEDULER_ALIVE,
            self.name,
            px=int(max(self.settings.sweep_interval * 5, 5) * 1000),
        )
        with Session(self.engine) as session:
            sweep_runs(session, self.redis, self.celery, self.settings, self.fence())
            return set(session.exec(select(Cluster.name)))

    def dispatch(self, clusters: set[str]) -> None:
        workers = live_workers(self.redis)
        with Session(self.engine) as session:
            for name in sorted(clusters):
                # Stamped by Redis' clock, the one the watchdog measures silence by.
                now = server_time(self.redis)
                self.wake_at.pop(name, None)
                decided = admit_and_send(
                    session, self.celery, name, workers, self.fence(), now=now, client=self.redis
                )
                if decided.wake_at is not None:
                    delay = max(decided.wake_at - now.timestamp(), 0.0)
                    self.wake_at[name] = time.monotonic() + delay

    def fence(self) -> int:
        """The token this scheduler's transactions carry; NotLeader once the lease lapsed."""
        if not self.lease.held() or self.lease.token is None:
            raise NotLeader(self.name)
        return self.lease.token

    def stop(self) -> None:
        self.stopping.set()

    def leave(self) -> None:
        """On a clean stop: hand the lease and the shards over at once."""
        with contextlib.suppress(redis.RedisError):
            self.lease.step_down()
        with contextlib.suppress(redis.RedisError):
            self.shards.release()
            leave_members(self.redis, self.name)


# The loop's units of work: each commits once, then acts on other processes.


def dispatch_cluster(
    session: Session,
    celery: Celery,
    cluster: str,
    workers: list[WorkerInfo],
    fence: int | None = None,
    *,
    now: datetime | None = None,
    client: redis.Redis | None = None,
) -> list[str]:
    """Hand as many waiting runs to the cluster's queue as it has free slots; returns
    their ids. Each run is recorded as handed over (committed) before its task is sent: a
    cancel that committed first wins (admission marks only runs still waiting), and a
    worker never holds a task whose run the database shows waiting. With ``fence`` (the
    leader's token) nothing is decided unless the fence still admits it (``hold_fence``).
    ``now`` (Redis' time, read once per admission) stamps the runs handed over.

    On a cluster with team quotas, the runs the admission preempts are recorded in the
    same commit; then ``client`` (the scheduler's Redis) tells their workers and records
    why each waiting run waits (``protocol.pending_reasons``). Without ``client`` (tests
    of admission alone) the preemptions stay recorded, unsignalled."""
    return [
        a.run_id
        for a in admit_and_send(
            session, celery, cluster, workers, fence, now=now, client=client
        ).assignments
    ]


def admit_and_send(
    session: Session,
    celery: Celery,
    cluster: str,
    workers: list[WorkerInfo],
    fence: int | None = None,
    *,
    now: datetime | None = None,
    client: redis.Redis | None = None,
) -> admission.Admission:
    """``dispatch_cluster``, returning the whole admission (the scheduler's loop reads
    when to decide again)."""
    hold_fence(session, fence)
    decided = admission.admit_cluster(session, cluster, workers, now)
    assignments = decided.assignments
    session.commit()
    if client is not None:
        signal(client, cluster, decided)
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
    return decided


def signal(client: redis.Redis, cluster: str, decided: admission.Admission) -> None:
    """After the commit: ask the preempted runs' workers to stop them (and again those
    asked before that still run: ``Admission.reminders``), and replace the cluster's
    pending reasons, in one round trip."""
    if decided.reasons is None and not decided.preemptions:
        return  # a cluster without quotas: nothing to tell
    pipe = client.pipeline(transaction=True)
    for preemption in [*decided.reminders, *decided.preemptions]:
        control.request_preemption(
            pipe,  # type: ignore[arg-type]
            preemption.run_id,
            preemption.attempt,
            reason=preemption.reason,
        )
    if decided.reasons is not None:
        pending_reasons.publish(pipe, cluster, decided.reasons)
    pipe.execute()
    for preemption in decided.preemptions:
        log.info("preempting %s on %s: %s", preemption.run_id, cluster, preemption.reason)


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
