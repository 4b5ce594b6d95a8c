"""Sharded ingest on a real Redis and database, with schedulers in this process (their
steps driven by the test): shards shared out and consumed by each holder, barriers that
wait for every shard, a paused holder's replay, wakes forwarded to the leader, and what the
single stream of before sharding still held. The same with real processes and signals is
in tests/integration/test_scheduler_failover.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session

from protocol import barriers, keys
from protocol.messages import LogChunk, StateChanged, TrackingBatch
from protocol.replies import as_text
from protocol.settings import Settings
from protocol.streams import send_to_ingest, shard_of
from runyard.status import RunStatus
from scheduler.ingest import Ingest
from scheduler.service import Scheduler
from store.tracking import reads
from tests.support.database import (
    HAPPY_PATH,
    log_rows,
    make_cluster,
    pending_count,
    queue_run,
    reload,
    walk,
)
from tests.support.services import RedisServer

LEASE = 600  # no lease runs out by itself here: tests end leases by deleting the key
SHARDS = 8


def scheduler(redis_service: RedisServer, engine: Engine, name: str) -> Scheduler:
    settings = Settings(
        redis_url=redis_service.url,
        database_url=engine.url.render_as_string(hide_password=False),
        sweep_interval=60,
        leader_lease_seconds=LEASE,
        ingest_shards=SHARDS,
    )
    service = Scheduler(settings, name=name)
    service.prepare()
    return service


@pytest.fixture
def pair(redis_service: RedisServer, engine: Engine) -> Iterator[list[Scheduler]]:
    """Two schedulers sharing the shards four and four; the first leads."""
    services = [scheduler(redis_service, engine, n) for n in ("sched-a", "sched-b")]
    first, second = services
    first.tick()  # alone: leads, holds every shard
    second.tick()  # counted now, but nothing is free
    first.tick()  # gives back its surplus
    second.tick()  # takes it
    try:
        yield services
    finally:
        for service in services:
            service.leave()
            service.engine.dispose()


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
    engine: Engine, session: Session, client: redis.Redis, pair: list[Scheduler]
) -> None:
    a, b = pair
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
    engine: Engine, session: Session, client: redis.Redis, pair: list[Scheduler]
) -> None:
    a, b = pair
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


def test_a_paused_holders_late_batch_changes_nothing(
    engine: Engine, session: Session, client: redis.Redis, pair: list[Scheduler]
) -> None:
    """The holder reads a run's reports, its metrics and its end, then pauses past its
    lease; the other takes the shard and applies them; the old one wakes and applies its
    batch again (as if it had passed its lease check just before it paused)."""
    a, b = pair
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
    engine: Engine, session: Session, client: redis.Redis, pair: list[Scheduler]
) -> None:
    """A scheduler paused between its lease check and its read reads from a shard it has
    lost: the holder applies that batch at its next renewal, not after an idle time."""
    a, _ = pair
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
    engine: Engine, session: Session, client: redis.Redis, pair: list[Scheduler]
) -> None:
    a, b = pair
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
