"""The watchdog (``scheduler/watchdog.py``): a run whose worker went silent becomes
NotResponding, then Failed; a run still heard from is left alone."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine
from sqlmodel import Session, col, select, update

from protocol import control, keys
from protocol.messages import StateChanged, decode
from protocol.workers import live_workers
from runyard.status import RunStatus
from scheduler import watchdog
from scheduler.service import dispatch_cluster, sweep_runs
from store import counters, runs
from store.announcements import Announcements
from store.lifecycle import transition
from store.models import Run, RunArraySpec, utcnow
from tests.support.database import (
    CLUSTER,
    DIGEST,
    ago,
    fast_watchdog,
    heartbeat,
    make_cluster,
    queue_run,
    reload,
    set_columns,
    walk,
)


def silent_running_run(session: Session, worker: str = "w-lost") -> str:
    """A Running run whose worker last reported a minute ago (no alive key in Redis)."""
    run_id = queue_run(session)
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
    run_id = queue_run(session)
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
    run_id = queue_run(session)
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
    run_id = queue_run(session)
    transition(session, run_id, RunStatus.RUNNING, at=ago(600))

    sweep_runs(session, client, celery, fast_watchdog())

    assert reload(engine, run_id).status == RunStatus.RUNNING


@pytest.mark.parametrize("skew", [6.0, -6.0], ids=["redis-ahead", "redis-behind"])
def test_liveness_is_judged_by_redis_clock_when_the_scheduler_host_is_off(
    engine: Engine,
    session: Session,
    client: redis.Redis,
    celery: Celery,
    monkeypatch: pytest.MonkeyPatch,
    skew: float,
) -> None:
    """Redis' clock reads the host's + ``skew``: a just-dispatched run is judged by the
    time it was handed over in that clock, never the host's."""
    base = utcnow() + timedelta(seconds=skew)  # a frozen Redis clock
    later = {"by": 0.0}

    def redis_now(_client: redis.Redis) -> datetime:
        return base + timedelta(seconds=later["by"])

    monkeypatch.setattr(watchdog, "server_time", redis_now)
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    unclaimed, started = queue_run(session), queue_run(session)
    sent = dispatch_cluster(session, celery, CLUSTER, live_workers(client), now=redis_now(client))
    assert sorted(sent) == sorted([unclaimed, started])
    attempt = reload(engine, started).attempt
    assert control.claim_run(client, started, "w-1", attempt) == control.ClaimResult.CLAIMED
    walk(session, started, RunStatus.PREPARING)
    settings = fast_watchdog(not_responding_after=5, dispatch_timeout=5)

    def sweep_once() -> list[str]:
        lost = watchdog.sweep(session, client, settings, Announcements())
        session.commit()
        return [a.run_id for a in lost]

    assert sweep_once() == []  # not re-sent early
    assert reload(engine, started).status == RunStatus.PREPARING

    later["by"] = 5.5  # not_responding_after and dispatch_timeout passed, in Redis' clock
    assert sweep_once() == [unclaimed]
    assert reload(engine, started).status == RunStatus.NOT_RESPONDING


def test_a_claim_whose_worker_vanished_is_superseded_before_the_run_waits_again(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    """A worker only cut off from Redis must not start the attempt it claimed once the
    run went back to the queue: the attempt is superseded, as a worker checks."""
    make_cluster(session)
    run_id = queue_run(session)
    set_columns(session, run_id, dispatched_at=ago(61), attempt=1)
    assert control.claim_run(client, run_id, "w-cut-off", 1) == control.ClaimResult.CLAIMED

    sweep_runs(session, client, celery, fast_watchdog(dispatch_timeout=5))

    assert reload(engine, run_id).dispatched_at is None
    assert not control.is_claimed(client, run_id, 1)
    assert control.is_cancel_requested(client, run_id, 1)


def test_a_lost_node_with_many_runs_is_handled_in_one_sweep_each_step(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    """Runs of one lost node move together (a few statements, not one per run), each as it
    would alone: NotResponding, then requeued where its cluster asks for it and Failed
    with the reason elsewhere; their children end with them; the counters stay exact."""
    make_cluster(session, "requeues", requeue_on_node_loss=True, max_attempts=3)
    make_cluster(session, "fails")
    spec = {"experiment": "sweep", "script": "t.py", "arguments_list": [[]] * 600}
    _, _, requeued = runs.submit_array(
        session, RunArraySpec(cluster="requeues", **spec), DIGEST, None
    )
    _, _, failed = runs.submit_array(session, RunArraySpec(cluster="fails", **spec), DIGEST, None)
    everything = [*requeued, *failed]
    for chunk in (everything[:600], everything[600:]):
        session.execute(
            update(Run)
            .where(col(Run.id).in_(chunk))
            .values(
                status=RunStatus.RUNNING,
                worker_id="w-lost",
                attempt=1,
                dispatched_at=ago(61),
                preparing_at=ago(60),
                running_at=ago(60),
            )
        )
    session.commit()
    parent = reload(engine, failed[0])
    child = f"{failed[0]}_child"  # an in-process child of a failed run: it fails with it
    fields = ("experiment_id", "cluster", "script", "created_at", "not_started_at", "running_at")
    row = {name: getattr(parent, name) for name in fields}
    row.update(id=child, parent_run_id=parent.id, root_run_id=parent.id, status=RunStatus.RUNNING)
    runs.insert_rows(session, Run, [row])
    session.commit()
    settings = fast_watchdog()

    sweep_runs(session, client, celery, settings)

    assert {reload(engine, r).status for r in everything} == {RunStatus.NOT_RESPONDING}
    session.execute(
        update(Run).where(col(Run.id).in_(everything[:600])).values(not_responding_at=ago(30))
    )
    session.execute(
        update(Run).where(col(Run.id).in_(everything[600:])).values(not_responding_at=ago(30))
    )
    session.commit()

    sweep_runs(session, client, celery, settings)

    with Session(engine) as fresh:
        stored = {r.id: r for r in fresh.exec(select(Run).where(col(Run.id).in_(everything)))}
        assert counters.read(fresh) == counters.recount(fresh)
    back = [stored[r] for r in requeued]
    assert {(r.status, r.dispatched_at, r.worker_id) for r in back} == {
        (RunStatus.QUEUED, None, None)
    }
    assert all(control.is_cancel_requested(client, r, 1) for r in requeued)  # superseded
    ended = [stored[r] for r in failed]
    assert {r.status for r in ended} == {RunStatus.FAILED}
    assert {r.failure_reason for r in ended} == {
        "node lost: worker w-lost sent no heartbeat for 2s"
    }
    assert reload(engine, child).status == RunStatus.FAILED
    assert reload(engine, child).failure_reason == "parent Failed"
    follower = [decode(f) for _, f in client.xrange(keys.run_live(requeued[-1]))]
    assert [e.status for e in follower if isinstance(e, StateChanged)] == [
        RunStatus.NOT_RESPONDING,
        RunStatus.QUEUED,
    ]
