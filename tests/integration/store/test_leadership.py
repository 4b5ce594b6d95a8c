"""Scheduler leadership (``scheduler/leadership.py``, ``store/fence.py``): one lease in the
real Redis, a fencing token the database checks, so only the current leader's admission and
watchdog decisions ever commit; every scheduler consumes its share of the ingest shards
(a lease per shard, balanced; barriers across shards; a paused holder's replay; the single
stream of before sharding applied after an upgrade)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine
from sqlmodel import Session, select

from protocol import barriers, keys
from protocol.messages import LogChunk, StateChanged, TrackingBatch, Wake
from protocol.replies import as_text
from protocol.settings import Settings
from protocol.streams import send_to_ingest, shard_of
from protocol.workers import live_workers
from runyard.status import RunStatus
from scheduler.ingest import Ingest
from scheduler.leadership import Lease, NotLeader, current_leader
from scheduler.service import Scheduler, dispatch_cluster, sweep_runs
from store import fence
from store.models import Run, Team, TeamQuota, utcnow
from store.tracking import reads
from tests.support.database import (
    CLUSTER,
    HAPPY_PATH,
    fast_watchdog,
    heartbeat,
    log_rows,
    make_cluster,
    pending_count,
    queue_run,
    reload,
    same_instant,
    set_columns,
    walk,
)
from tests.support.services import RedisServer

# Long enough that no lease here runs out by itself on a loaded machine: tests end leases
# by deleting the key, as its expiry would.
LEASE = 600
SHARDS = keys.DEFAULT_INGEST_SHARDS


def test_one_scheduler_holds_the_lease_and_the_other_follows(client: redis.Redis) -> None:
    first, second = Lease(client, "s1", LEASE), Lease(client, "s2", LEASE)

    assert first.tick() and not second.tick()
    assert first.tick()  # renewed
    assert not second.tick()

    leader = current_leader(client)
    assert leader is not None and (leader.name, leader.token) == ("s1", first.token)
    assert second.token is None and not second.held()


def test_a_lapsed_lease_goes_to_the_next_scheduler_with_a_higher_token(
    client: redis.Redis,
) -> None:
    old, new = Lease(client, "s1", LEASE), Lease(client, "s2", LEASE)
    assert old.tick()
    old_token = old.token
    client.delete(keys.SCHEDULER_LEADER)  # the lease ran out (the leader was paused)

    assert new.tick()
    assert new.token is not None and old_token is not None and new.token > old_token
    # The old leader wakes: its renewal finds another's lease, and it follows.
    assert not old.tick()
    assert old.token is None and not old.held()
    assert current_leader(client).name == "s2"  # type: ignore[union-attr]


def test_stepping_down_hands_the_lease_over_but_never_removes_another_leaders(
    client: redis.Redis,
) -> None:
    first, second = Lease(client, "s1", LEASE), Lease(client, "s2", LEASE)
    assert first.tick()
    first.step_down()
    assert current_leader(client) is None
    assert second.tick()

    stale = Lease(client, "s1", LEASE)
    stale.token = first.token if first.token is not None else 1  # an old token, remembered
    stale.step_down()
    assert current_leader(client).name == "s2"  # type: ignore[union-attr]


def test_the_fence_admits_the_latest_token_and_refuses_an_older_one(engine: Engine) -> None:
    with Session(engine) as session:
        assert fence.current(session) is None
        assert fence.hold(session, 5)  # the row is created
        session.commit()
    with Session(engine) as session:
        assert fence.hold(session, 5)  # the same leader again
        assert not fence.hold(session, 4)
        session.rollback()
    with Session(engine) as session:
        assert fence.hold(session, 9)
        session.commit()
        assert not fence.hold(session, 5)
        session.rollback()
        assert fence.current(session) == 9


def test_a_paused_leader_can_neither_dispatch_nor_sweep_after_a_later_one_wrote(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=4)
    heartbeat(client, CLUSTER, slots=4)
    ids = [queue_run(session) for _ in range(3)]
    old, new = Lease(client, "old", LEASE), Lease(client, "new", LEASE)
    assert old.tick()
    client.delete(keys.SCHEDULER_LEADER)  # old is paused past its lease
    assert new.tick()
    assert new.token is not None and old.token is not None

    # The new leader's first fenced unit of work records its token.
    sweep_runs(session, client, celery, fast_watchdog(), new.token)
    # The old one wakes and tries to admit, then to sweep: refused, nothing written or sent.
    with pytest.raises(NotLeader):
        dispatch_cluster(session, celery, CLUSTER, live_workers(client), old.token)
    with pytest.raises(NotLeader):
        sweep_runs(session, client, celery, fast_watchdog(), old.token)
    assert all(reload(engine, run_id).dispatched_at is None for run_id in ids)
    assert client.llen(keys.cluster_queue(CLUSTER)) == 0

    sent = dispatch_cluster(session, celery, CLUSTER, live_workers(client), new.token)
    assert sent == ids
    assert [reload(engine, run_id).attempt for run_id in ids] == [1, 1, 1]
    assert fence.current(session) == new.token


def scheduler(redis_service: RedisServer, engine: Engine, name: str) -> Scheduler:
    settings = Settings(
        redis_url=redis_service.url,
        database_url=engine.url.render_as_string(hide_password=False),
        sweep_interval=60,  # only what a test asks for happens
        leader_lease_seconds=LEASE,
    )
    service = Scheduler(settings, name=name)
    service.prepare()
    return service


@pytest.fixture
def pair(redis_service: RedisServer, engine: Engine, client: redis.Redis) -> Iterator[list]:
    """Two schedulers on the same Redis and database; the first leads."""
    services = [scheduler(redis_service, engine, n) for n in ("sched-a", "sched-b")]
    services[0].tick()
    services[1].tick()
    try:
        yield services
    finally:
        for service in services:
            service.leave()
            service.engine.dispose()


def test_only_the_leader_reads_wakes_and_admits(
    engine: Engine, session: Session, client: redis.Redis, pair: list[Scheduler]
) -> None:
    leader, follower = pair
    assert leader.lease.held() and not follower.lease.held()
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    run_id = queue_run(session)
    send_to_ingest(client, [Wake(cluster=CLUSTER)])

    follower.next_sweep = follower.next_tick = time.monotonic() + LEASE
    follower.stopping.set()  # its wait for the next tick returns at once
    follower.step()
    assert pending_count(client) == 0
    assert reload(engine, run_id).dispatched_at is None

    leader.next_sweep = leader.next_tick = time.monotonic() + LEASE
    leader.step()  # reads the submit's wake and admits
    assert reload(engine, run_id).dispatched_at is not None
    assert client.llen(keys.cluster_queue(CLUSTER)) == 1


def test_a_new_holder_applies_what_the_old_one_left_pending_before_anything_newer(
    engine: Engine, session: Session, client: redis.Redis, pair: list[Scheduler]
) -> None:
    make_cluster(session)
    run_id = queue_run(session)
    old, new = pair
    stream = keys.ingest_shard(shard_of(run_id, old.settings.ingest_shards))
    send_to_ingest(client, [LogChunk(run_id=run_id, seq=1, text="first\n")])
    assert len(old.ingest.read(block_ms=100)) == 1  # read, then the scheduler is killed
    send_to_ingest(client, [LogChunk(run_id=run_id, seq=2, text="second\n")])
    # Its leases run out, and it is no longer counted among the live schedulers.
    client.delete(keys.SCHEDULER_LEADER, *map(keys.ingest_shard_lease, range(8)))
    client.zrem(keys.SCHEDULER_MEMBERS, old.name)

    new.tick()  # takes the lease and every shard, and first the old one's pending entries
    assert new.lease.held() and sorted(new.shards.held()) == list(range(8))
    assert log_rows(engine, run_id) == [(1, "first\n")]
    names = {as_text(c["name"]) for c in client.xinfo_consumers(stream, "ingest")}
    assert "sched-a" not in names
    new.next_sweep = new.next_tick = time.monotonic() + LEASE
    new.step()
    assert log_rows(engine, run_id) == [(1, "first\n"), (2, "second\n")]
    assert pending_count(client) == 0
    assert session.exec(select(Run.id)).all() == [run_id]


def test_the_leader_stamps_hand_overs_by_redis_clock(
    engine: Engine,
    session: Session,
    client: redis.Redis,
    pair: list[Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watchdog measures a hand-over's age by Redis' clock, so admission stamps it by
    the same clock, not the scheduler host's (here 6 s behind Redis)."""
    leader, _ = pair
    redis_now = utcnow() + timedelta(seconds=6)
    monkeypatch.setattr("scheduler.service.server_time", lambda _client: redis_now)
    make_cluster(session)
    heartbeat(client, CLUSTER, slots=1)
    run_id = queue_run(session)

    leader.dispatch({CLUSTER})

    dispatched_at = reload(engine, run_id).dispatched_at
    assert dispatched_at is not None and same_instant(dispatched_at, redis_now)


# Sharded ingest: the schedulers share the shards, each applies its own.


@pytest.fixture
def shared(pair: list[Scheduler]) -> list[Scheduler]:
    """The pair once they share the shards four and four (the first, alone at first, took
    every shard; it gives back its surplus at its next renewal and the second takes it)."""
    first, second = pair
    first.tick()
    second.tick()
    return pair


def step(service: Scheduler) -> None:
    """One read-and-apply, no tick, no sweep."""
    service.next_sweep = service.next_tick = time.monotonic() + LEASE
    service.step()


def runs_on_each(session: Session, holders: list[Scheduler]) -> list[str]:
    """A queued run on a shard of each holder."""
    wanted = [set(h.shards.held()) for h in holders]
    found: list[str] = []
    while len(found) < len(holders):
        run_id = queue_run(session)
        shard = shard_of(run_id, SHARDS)
        if shard in wanted[len(found)]:
            found.append(run_id)
    return found


def test_two_schedulers_each_apply_the_runs_on_their_own_shards(
    engine: Engine, session: Session, client: redis.Redis, shared: list[Scheduler]
) -> None:
    a, b = shared
    assert len(a.shards.held()) == len(b.shards.held()) == SHARDS // 2
    assert set(a.shards.held()).isdisjoint(b.shards.held())
    owners = {
        s: as_text(client.get(keys.ingest_shard_lease(s))).split(" ", 1)[1] for s in range(SHARDS)
    }
    assert sorted(owners.values()) == ["sched-a"] * 4 + ["sched-b"] * 4
    make_cluster(session)
    run_a, run_b = runs_on_each(session, [a, b])
    for run_id in (run_a, run_b):
        send_to_ingest(
            client,
            [LogChunk(run_id=run_id, seq=n, text=f"{n}\n") for n in range(3)],
            shards=SHARDS,
        )

    step(a)
    assert [seq for seq, _ in log_rows(engine, run_a)] == [0, 1, 2]
    assert log_rows(engine, run_b) == []  # not a's to apply
    step(b)
    assert [seq for seq, _ in log_rows(engine, run_b)] == [0, 1, 2]
    assert pending_count(client) == 0


def test_a_barrier_returns_once_every_shard_has_stored_what_came_before_it(
    engine: Engine, session: Session, client: redis.Redis, shared: list[Scheduler]
) -> None:
    a, b = shared
    make_cluster(session)
    run_a, run_b = runs_on_each(session, [a, b])
    barrier = barriers.new()
    send_to_ingest(
        client,
        [
            LogChunk(run_id=run_a, seq=0, text="a\n"),
            LogChunk(run_id=run_b, seq=0, text="b\n"),
            barrier,
        ],
        shards=SHARDS,
    )

    step(a)  # a's shards passed their copies; b's have not
    assert log_rows(engine, run_b) == []
    assert not barriers.wait(client, barrier, timeout=0.01)
    step(b)
    assert barriers.wait(client, barrier, timeout=0.01)
    assert log_rows(engine, run_a) == [(0, "a\n")] and log_rows(engine, run_b) == [(0, "b\n")]


def test_what_a_stale_holder_reads_after_losing_a_shard_is_applied_before_anything_newer(
    engine: Engine, session: Session, client: redis.Redis, shared: list[Scheduler]
) -> None:
    """The old holder passed its lease check, paused, lost the shard, woke and read (its
    list of streams not yet renewed): the new holder applies those entries before the ones
    it reads next, or the producer's mark would skip them as replays."""
    a, b = shared
    make_cluster(session)
    run_id = runs_on_each(session, [a])[0]
    walk(session, run_id, *HAPPY_PATH[:-2])

    def points(first: int) -> TrackingBatch:
        events = [[n, {"r": run_id, "k": "m", "n": "loss", "v": float(n)}]
                  for n in range(first, first + 3)]  # fmt: skip
        return TrackingBatch(run_id=run_id, origin=run_id, producer="p", events=events)

    client.delete(*map(keys.ingest_shard_lease, a.shards.held()))  # a's leases run out
    client.zrem(keys.SCHEDULER_MEMBERS, a.name)
    b.tick()  # b holds every shard
    send_to_ingest(client, [points(0)], shards=SHARDS)
    stale = a.ingest.read(block_ms=100)  # a, not yet renewed, reads the shard it lost
    assert len(stale) == 1
    send_to_ingest(client, [points(3)], shards=SHARDS)

    b.ingest.process(b.ingest.read(block_ms=100))

    with Session(engine) as fresh:
        series = reads.metrics_of(fresh, [run_id])["runs"][run_id]["loss"]
    assert [value for _, _, value in series["points"]] == [float(n) for n in range(6)]
    assert pending_count(client) == 0


def test_a_paused_holders_late_batch_changes_nothing(
    engine: Engine, session: Session, client: redis.Redis, shared: list[Scheduler]
) -> None:
    """The holder reads a run's reports, its metrics and its end, then pauses past its
    lease; the other takes the shard and applies them; the old one wakes and applies its
    batch again (as if it had passed its lease check just before it paused)."""
    a, b = shared
    make_cluster(session)
    run_id = runs_on_each(session, [a])[0]
    walk(session, run_id, *HAPPY_PATH[:-2])  # handed over and starting
    points = TrackingBatch(
        run_id=run_id,
        origin=run_id,
        producer="p",
        events=[[n, {"r": run_id, "k": "m", "n": "loss", "v": float(n)}] for n in range(5)],
    )
    entries = [
        StateChanged(run_id=run_id, status=RunStatus.RUNNING),
        points,
        LogChunk(run_id=run_id, seq=0, text="done\n"),
        StateChanged(run_id=run_id, status=RunStatus.COMPLETED),
    ]
    send_to_ingest(client, entries, shards=SHARDS)
    late = a.ingest.read(block_ms=100)  # read, then a pauses
    assert len(late) == 4

    client.delete(*map(keys.ingest_shard_lease, a.shards.held()))  # a's leases run out
    client.zrem(keys.SCHEDULER_MEMBERS, a.name)
    b.tick()  # b takes them, and first what a left pending
    assert sorted(b.shards.held()) == list(range(SHARDS))
    assert reload(engine, run_id).status == RunStatus.COMPLETED

    # a wakes and applies its batch again: nothing changes.
    a.ingest.process(late)
    assert reload(engine, run_id).status == RunStatus.COMPLETED
    with Session(engine) as fresh:
        series = reads.metrics_of(fresh, [run_id])["runs"][run_id]["loss"]
    assert series["count"] == 5
    assert [(idx, value) for idx, _, value in series["points"]] == [(n, float(n)) for n in range(5)]
    assert log_rows(engine, run_id) == [(0, "done\n")]
    # Its next tick finds the shards gone: it reads none of them again.
    a.tick()
    shard_streams = {keys.ingest_shard(s) for s in range(SHARDS)}
    assert a.shards.held() == [] and not shard_streams & set(a.ingest.streams)
    assert pending_count(client) == 0


def test_what_another_consumer_read_from_a_held_shard_is_applied_at_the_next_renewal(
    engine: Engine, session: Session, client: redis.Redis, shared: list[Scheduler]
) -> None:
    """A scheduler paused between its lease check and its read reads from a shard it has
    lost: the holder applies that batch at its next renewal, not after an idle time."""
    a, _ = shared
    make_cluster(session)
    run_id = runs_on_each(session, [a])[0]
    stray = Ingest(engine, client, "paused-one", shards=SHARDS)
    stray.read_from([keys.ingest_shard(shard_of(run_id, SHARDS))])
    send_to_ingest(client, [LogChunk(run_id=run_id, seq=0, text="x\n")], shards=SHARDS)
    assert len(stray.read(block_ms=100)) == 1

    a.tick()
    assert log_rows(engine, run_id) == [(0, "x\n")]
    assert pending_count(client) == 0


def test_a_follower_that_applies_a_runs_end_wakes_the_leader(
    engine: Engine, session: Session, client: redis.Redis, shared: list[Scheduler]
) -> None:
    a, b = shared
    assert a.lease.held() and not b.lease.held()
    make_cluster(session)
    run_id = runs_on_each(session, [a, b])[1]
    walk(session, run_id, *HAPPY_PATH[:-1])  # running
    send_to_ingest(client, [StateChanged(run_id=run_id, status=RunStatus.COMPLETED)], shards=SHARDS)
    step(b)
    assert reload(engine, run_id).status == RunStatus.COMPLETED
    wakes = client.xrange(keys.INGEST_WAKE_STREAM)
    assert [as_text(f[b"type"]) for _, f in wakes] == ["wake"]
    assert b'"cluster": "' in wakes[0][1][b"data"]


def test_what_the_single_stream_held_before_the_upgrade_is_applied(
    engine: Engine, session: Session, client: redis.Redis, redis_service: RedisServer
) -> None:
    """An old scheduler had read an entry (pending) and one more waited; old workers wrote
    both to the one stream. The first new leader applies both, the pending one first."""
    make_cluster(session)
    run_id = queue_run(session)
    old = Ingest(engine, client, "old-scheduler", shards=SHARDS)
    old.ensure_group()
    old.read_from([keys.INGEST_STREAM])
    for seq in (1, 2):
        client.xadd(keys.INGEST_STREAM, LogChunk(run_id=run_id, seq=seq, text=f"{seq}\n").encode())
    assert len(old.read(block_ms=100)) == 2
    client.xadd(keys.INGEST_STREAM, LogChunk(run_id=run_id, seq=3, text="3\n").encode())

    new = scheduler(redis_service, engine, "new")
    try:
        new.tick()  # leads: first the old stream's pending entries
        assert [seq for seq, _ in log_rows(engine, run_id)] == [1, 2]
        step(new)
        assert [seq for seq, _ in log_rows(engine, run_id)] == [1, 2, 3]
        assert pending_count(client) == 0
    finally:
        new.leave()
        new.engine.dispose()


def test_the_leader_decides_again_when_a_victim_reaches_the_minimum_runtime(
    engine: Engine, session: Session, client: redis.Redis, pair: list[Scheduler]
) -> None:
    """A team below its quota waits for a borrower that has not run the cluster's minimum
    runtime yet: nothing else may happen meanwhile, so the leader itself admits again then,
    and preempts it."""
    leader, _ = pair
    make_cluster(session, nodes=1, preemption_min_runtime_seconds=3600)
    heartbeat(client, CLUSTER, slots=1)
    for team in ("vision", "nlp"):
        session.add(Team(name=team))
        session.flush()
        session.add(TeamQuota(cluster=CLUSTER, team=team, slots=0 if team == "vision" else 1))
    session.commit()
    borrower = queue_run(session)
    set_columns(session, borrower, team="vision")
    leader.dispatch({CLUSTER})
    walk(session, borrower, RunStatus.PREPARING, RunStatus.STARTING, RunStatus.RUNNING)
    set_columns(session, borrower, dispatched_at=utcnow() - timedelta(seconds=3000))
    waiting = queue_run(session)
    set_columns(session, waiting, team="nlp")

    leader.dispatch({CLUSTER})

    assert reload(engine, borrower).preempt_requested_at is None
    due = leader.wake_at[CLUSTER] - time.monotonic()
    assert 500 < due <= 600  # 3600 s minimum runtime, 3000 s run
    set_columns(session, borrower, dispatched_at=utcnow() - timedelta(seconds=3600))
    leader.wake_at[CLUSTER] = time.monotonic()  # that time has come
    step(leader)

    assert reload(engine, borrower).preempted_by == waiting
    assert CLUSTER not in leader.wake_at
