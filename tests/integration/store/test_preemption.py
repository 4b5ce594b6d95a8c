"""Preemption in the store and the ingest: the scheduler's mark on a running run
(``store.preemption``), the worker's report of the stopped attempt, which requeues the
same run for its next attempt (``scheduler.ingest.apply_preempted``), and a cancel, which
wins. Workers are played by their reports; the real workers' side is in
``tests/integration/test_preemption.py``."""

from __future__ import annotations

import redis
from sqlalchemy import Engine
from sqlmodel import Session, select

from protocol import control
from protocol.messages import StateChanged
from protocol.streams import send_to_ingest
from protocol.workers import live_workers
from runyard.status import RunStatus
from scheduler.admission import admit
from scheduler.ingest import Ingest
from store import preemption, runs
from store.attempts import PREEMPTED
from store.models import RunAttempt
from tests.support.database import (
    CLUSTER,
    heartbeat,
    make_cluster,
    queue_run,
    reload,
    set_columns,
    walk,
)

REASON = "team vision reclaims 1 slot lent to team nlp"


def running(session: Session, client: redis.Redis, ingest: Ingest) -> str:
    """A run handed out (attempt 1) and reported Running by its worker."""
    make_cluster(session)
    heartbeat(client, CLUSTER, slots=1)
    run_id = queue_run(session)
    [assignment] = admit(session, CLUSTER, live_workers(client))
    session.commit()
    assert assignment.attempt == 1
    control.claim_run(client, run_id, "w-1", 1)
    for status in (RunStatus.PREPARING, RunStatus.RUNNING):
        report(client, ingest, StateChanged(run_id=run_id, status=status, attempt=1))
    session.expire_all()
    return run_id


def preempt(session: Session, client: redis.Redis, run_id: str) -> None:
    """As the leading scheduler does: record, commit, then mark the attempt for its worker."""
    asked = preemption.request_preemption(session, run_id, "team vision", REASON)
    session.commit()
    assert asked is not None
    control.request_preemption(client, run_id, asked.attempt, asked.reason)


def report(client: redis.Redis, ingest: Ingest, entry: StateChanged) -> set[str]:
    send_to_ingest(client, [entry])
    return ingest.process(ingest.read(block_ms=100)).clusters


def preempted(run_id: str, attempt: int = 1, **fields: object) -> StateChanged:
    return StateChanged(
        run_id=run_id,
        status=RunStatus.QUEUED,
        worker_id="w-1",
        attempt=attempt,
        preempted=True,
        reason=REASON,
        **fields,  # type: ignore[arg-type]
    )


def test_a_preempted_attempt_requeues_the_same_run_for_its_next_attempt(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    run_id = running(session, client, ingest)
    preempt(session, client, run_id)
    assert control.preemption_reason(client, run_id, 1) == REASON
    marked = reload(engine, run_id)
    assert marked.preempt_requested_at is not None and marked.status == RunStatus.RUNNING

    woken = report(client, ingest, preempted(run_id))

    assert woken == {CLUSTER}  # admission looks again at once
    run = reload(engine, run_id)
    assert run.status == RunStatus.QUEUED and run.queued_at is not None
    assert (run.dispatched_at, run.worker_id, run.environment_used) == (None, None, None)
    assert (run.preemptions, run.previous_attempt_preempted) == (1, True)
    assert run.preempt_requested_at is None
    assert (run.preempted_by, run.preemption_reason) == ("team vision", REASON)
    assert run.attempt == 1 and run.failure_reason is None
    with Session(engine) as fresh:
        [first] = fresh.exec(select(RunAttempt).where(RunAttempt.run_id == run_id)).all()
    assert (first.attempt, first.outcome, first.preempted_by) == (1, PREEMPTED, "team vision")
    assert first.ended_at is not None

    session.expire_all()
    [again] = admit(session, CLUSTER, live_workers(client))
    session.commit()
    assert (again.run_id, again.attempt, again.previous_attempt_preempted) == (run_id, 2, True)


def test_a_replayed_or_late_preemption_report_changes_nothing(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    run_id = running(session, client, ingest)
    preempt(session, client, run_id)
    report(client, ingest, preempted(run_id))

    assert report(client, ingest, preempted(run_id)) == set()  # replayed: the run waits
    session.expire_all()
    admit(session, CLUSTER, live_workers(client))
    session.commit()
    walk(session, run_id, RunStatus.PREPARING, RunStatus.RUNNING)
    assert report(client, ingest, preempted(run_id)) == set()  # attempt 1's, late
    run = reload(engine, run_id)
    assert (run.status, run.attempt, run.preemptions) == (RunStatus.RUNNING, 2, 1)


def test_a_queued_report_nobody_asked_for_is_refused(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    run_id = running(session, client, ingest)
    plain = StateChanged(run_id=run_id, status=RunStatus.QUEUED, worker_id="w-1", attempt=1)
    assert report(client, ingest, plain) == set()  # not as preempted
    assert report(client, ingest, preempted(run_id)) == set()  # no preemption was asked
    run = reload(engine, run_id)
    assert (run.status, run.preemptions, run.dispatched_at is not None) == (
        RunStatus.RUNNING,
        0,
        True,
    )


def test_only_a_run_a_worker_executes_is_preempted_and_only_once(
    session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    run_id = running(session, client, ingest)
    waiting = queue_run(session)
    assert preemption.request_preemption(session, waiting, "x", "y") is None
    first = preemption.request_preemption(session, run_id, "team vision", REASON)
    assert first is not None and first.attempt == 1
    assert preemption.request_preemption(session, run_id, "team other", "again") is None
    session.commit()
    ended = queue_run(session)
    walk(session, ended, RunStatus.CANCELED)
    assert preemption.request_preemption(session, ended, "x", "y") is None


def test_a_run_that_opted_out_is_never_preempted(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    run_id = running(session, client, ingest)
    set_columns(session, run_id, preemptible=False)
    assert preemption.request_preemption(session, run_id, "team vision", REASON) is None
    session.commit()
    assert reload(engine, run_id).preempt_requested_at is None


def test_a_cancel_during_preemption_wins(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    run_id = running(session, client, ingest)
    preempt(session, client, run_id)
    runs.cancel(session, client, run_id)
    session.commit()
    assert reload(engine, run_id).status == RunStatus.CANCEL_REQUESTED

    woken = report(client, ingest, preempted(run_id))

    run = reload(engine, run_id)
    assert (run.status, run.failure_reason, run.preemptions) == (
        RunStatus.CANCELED,
        "canceled by request",
        0,
    )
    assert woken == {CLUSTER}


def test_a_run_that_ends_before_its_worker_stops_it_is_no_longer_shown_stopping(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    """Its script ended first: the preemption is over with it, but who asked stays."""
    run_id = running(session, client, ingest)
    preempt(session, client, run_id)

    report(client, ingest, StateChanged(run_id=run_id, status=RunStatus.COMPLETED, attempt=1))

    run = reload(engine, run_id)
    assert (run.status, run.preempt_requested_at, run.preemptions) == (
        RunStatus.COMPLETED,
        None,
        0,
    )
    assert (run.preempted_by, run.preemption_reason) == ("team vision", REASON)


def test_a_requeued_run_is_cancelled_at_once_although_its_last_attempt_was_claimed(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    """The claim of attempt 1 outlives it in Redis: a cancel of the waiting run must not
    take it for a worker holding the run (nobody would ever end it)."""
    run_id = running(session, client, ingest)
    preempt(session, client, run_id)
    report(client, ingest, preempted(run_id))

    runs.cancel(session, client, run_id)
    session.commit()

    assert reload(engine, run_id).status == RunStatus.CANCELED


def test_a_preempted_attempt_reported_after_its_worker_was_silent_is_requeued(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    """The worker stopped the run while cut off from Redis long enough to be found
    NotResponding; its report, once it reaches the ingest, still requeues the run."""
    run_id = running(session, client, ingest)
    preempt(session, client, run_id)
    walk(session, run_id, RunStatus.NOT_RESPONDING)

    assert report(client, ingest, preempted(run_id)) == {CLUSTER}

    run = reload(engine, run_id)
    assert (run.status, run.preemptions, run.previous_attempt_preempted) == (
        RunStatus.QUEUED,
        1,
        True,
    )
