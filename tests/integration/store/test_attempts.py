"""Run attempts and decayed team usage (``store/attempts.py``): the ingest opens an attempt
at a worker's first report and closes it at its end, once however often reports are
replayed; the watchdog and ends from outside close it too; each ended attempt is folded
into its team's usage, decayed with the cluster's half-life, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from protocol.messages import StateChanged
from protocol.streams import send_to_ingest
from runyard.status import RunStatus
from scheduler.ingest import Ingest
from scheduler.service import sweep_runs
from store import attempts, runs
from store.announcements import Announcements
from store.models import Cluster, Run, RunAttempt, TeamUsage, utcnow
from tests.support.database import (
    CLUSTER,
    ago,
    fast_watchdog,
    make_cluster,
    queue_run,
    set_columns,
    walk,
)

HOUR = 3600.0


def team_run(session: Session, team: str | None = "vision", **columns: object) -> str:
    run_id = queue_run(session)
    set_columns(session, run_id, team=team, submitted_by="ada", **columns)
    return run_id


def attempt_rows(engine: Engine, run_id: str | None = None) -> list[RunAttempt]:
    with Session(engine) as fresh:
        query = select(RunAttempt).order_by(col(RunAttempt.run_id), col(RunAttempt.attempt))
        if run_id is not None:
            query = query.where(RunAttempt.run_id == run_id)
        return list(fresh.exec(query))


def usage_row(engine: Engine, team: str = "vision") -> TeamUsage:
    with Session(engine) as fresh:
        row = fresh.get(TeamUsage, (CLUSTER, team))
        assert row is not None
        return row


def closed_form(start_age: float, end_age: float, half_life: float) -> float:
    """One slot over [T - start_age, T - end_age], decayed to T, integrated by hand."""
    return half_life / math.log(2) * (2 ** (-end_age / half_life) - 2 ** (-start_age / half_life))


def ingest_all(ingest: Ingest) -> None:
    ingest.process(ingest.read(block_ms=100))


def test_replayed_reports_open_and_close_one_attempt(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    make_cluster(session, fair_share_half_life_hours=1.0)
    run_id = team_run(session, dispatched_at=ago(7300), attempt=1)
    start, end = ago(7200), ago(3600)
    reports = [
        StateChanged(run_id=run_id, status=RunStatus.PREPARING, at=start, attempt=1),
        StateChanged(run_id=run_id, status=RunStatus.RUNNING, at=start, attempt=1),
        StateChanged(run_id=run_id, status=RunStatus.COMPLETED, at=end, attempt=1),
    ]
    send_to_ingest(client, reports)
    ingest_all(ingest)
    send_to_ingest(client, reports)  # every report again: a consumer died before its ack
    ingest_all(ingest)

    [row] = attempt_rows(engine, run_id)
    assert (row.attempt, row.cluster, row.team, row.submitted_by) == (1, CLUSTER, "vision", "ada")
    assert (row.outcome, row.gpus) == (attempts.COMPLETED, 0)
    assert row.ended_at is not None
    assert (row.ended_at - row.started_at).total_seconds() == pytest.approx(3600)
    usage = usage_row(engine)
    # Folded once, decayed to the attempt's end: one hour at a half-life of one hour.
    assert usage.slot_seconds == pytest.approx(closed_form(HOUR, 0, HOUR))
    assert usage.gpu_seconds == 0


def test_a_run_that_ends_at_its_first_report_still_held_a_slot(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    make_cluster(session)
    run_id = team_run(session, team=None, dispatched_at=ago(5), attempt=1)
    send_to_ingest(
        client, [StateChanged(run_id=run_id, status=RunStatus.FAILED, at=ago(1), attempt=1)]
    )
    ingest_all(ingest)

    [row] = attempt_rows(engine, run_id)
    assert (row.team, row.outcome) == ("", attempts.FAILED)
    assert row.ended_at is not None


def test_the_gpus_a_worker_reports_are_the_attempts(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    make_cluster(session)
    run_id = team_run(session, dispatched_at=ago(5), attempt=1)
    reports = [
        StateChanged(run_id=run_id, status=status, at=ago(age), attempt=1, gpus=2)
        for status, age in ((RunStatus.PREPARING, 4), (RunStatus.COMPLETED, 1))
    ]
    send_to_ingest(client, reports)
    ingest_all(ingest)

    [row] = attempt_rows(engine, run_id)
    assert (row.gpus, row.outcome) == (2, attempts.COMPLETED)
    assert usage_row(engine).gpu_seconds == pytest.approx(2 * usage_row(engine).slot_seconds)


def test_a_refused_report_opens_no_attempt(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    make_cluster(session)
    run_id = team_run(session)
    runs.cancel(session, client, run_id)  # cancelled while it waited: it never starts
    session.commit()
    send_to_ingest(
        client, [StateChanged(run_id=run_id, status=RunStatus.CANCELED, at=utcnow(), attempt=0)]
    )
    ingest_all(ingest)

    assert attempt_rows(engine) == []


def test_decay_matches_the_closed_form_and_folds_attempts_in_any_order(
    engine: Engine, session: Session
) -> None:
    make_cluster(session, fair_share_half_life_hours=2.0)
    half_life = 2 * HOUR
    t0 = datetime(2026, 11, 1, tzinfo=utcnow().tzinfo)
    first, second = team_run(session), team_run(session)
    run = session.get(Run, first)
    other = session.get(Run, second)
    assert run is not None and other is not None
    # First: [t0, t0+3h], ended first; second: [t0+1h, t0+2h], reported after it.
    attempts.attempt_started(session, run, 1, t0)
    attempts.attempt_started(session, other, 1, t0 + timedelta(hours=1))
    attempts.attempt_ended(session, first, 1, t0 + timedelta(hours=3), attempts.COMPLETED)
    attempts.attempt_ended(session, second, 1, t0 + timedelta(hours=2), attempts.FAILED)
    session.commit()

    usage = usage_row(engine)
    assert usage.as_of.replace(tzinfo=t0.tzinfo) == t0 + timedelta(hours=3)
    expected = closed_form(3 * HOUR, 0, half_life) + closed_form(2 * HOUR, HOUR, half_life)
    assert usage.slot_seconds == pytest.approx(expected)

    # Read five hours later, two more: the whole sum halves once.
    cluster = session.get(Cluster, CLUSTER)
    assert cluster is not None
    read = attempts.decayed_usage(session, cluster, t0 + timedelta(hours=5))
    assert read == {"vision": pytest.approx(expected / 2)}


def test_an_attempt_ending_after_the_stored_usage_decays_the_stored_sum_first(
    engine: Engine, session: Session
) -> None:
    make_cluster(session, fair_share_half_life_hours=1.0)
    t0 = datetime(2026, 11, 1, tzinfo=utcnow().tzinfo)
    first, second = team_run(session), team_run(session)
    for run_id, hours in ((first, 0), (second, 4)):
        run = session.get(Run, run_id)
        assert run is not None
        attempts.attempt_started(session, run, 1, t0 + timedelta(hours=hours))
        attempts.attempt_ended(
            session, run_id, 1, t0 + timedelta(hours=hours + 1), attempts.COMPLETED
        )
        session.commit()

    one_hour = closed_form(HOUR, 0, HOUR)
    # The first hour ended 4 h before the second: it counts 2^-4 of itself.
    assert usage_row(engine).slot_seconds == pytest.approx(one_hour / 16 + one_hour)


def test_gpu_seconds_weigh_by_the_attempts_gpus(engine: Engine, session: Session) -> None:
    make_cluster(session)
    run_id = team_run(session)
    run = session.get(Run, run_id)
    assert run is not None
    at = utcnow()
    attempts.attempt_started(session, run, 1, at - timedelta(seconds=100), gpus=4)
    attempts.attempt_ended(session, run_id, 1, at, attempts.COMPLETED)
    session.commit()

    usage = usage_row(engine)
    assert usage.gpu_seconds == pytest.approx(4 * usage.slot_seconds)
    assert usage.slot_seconds == pytest.approx(100, rel=1e-3)  # barely decayed at 7 days


def test_concurrent_ends_are_all_folded(engine: Engine, session: Session) -> None:
    make_cluster(session, fair_share_half_life_hours=1.0)
    at = utcnow()
    ids = [team_run(session) for _ in range(8)]
    for n, run_id in enumerate(ids):
        run = session.get(Run, run_id)
        assert run is not None
        attempts.attempt_started(session, run, 1, at - timedelta(minutes=10 * (n + 1)))
    session.commit()

    ready = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def end(run_id: str) -> None:
        try:
            with Session(engine) as own:
                ready.wait()
                attempts.attempt_ended(own, run_id, 1, at, attempts.COMPLETED)
                own.commit()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=end, args=(run_id,)) for run_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    expected = sum(closed_form(600 * (n + 1), 0, HOUR) for n in range(len(ids)))
    assert usage_row(engine).slot_seconds == pytest.approx(expected)
    assert all(row.ended_at is not None for row in attempt_rows(engine))


def test_ending_an_attempt_twice_folds_it_once(engine: Engine, session: Session) -> None:
    make_cluster(session)
    run_id = team_run(session)
    run = session.get(Run, run_id)
    assert run is not None
    at = utcnow()
    attempts.attempt_started(session, run, 1, at - timedelta(seconds=60))
    attempts.attempt_ended(session, run_id, 1, at, attempts.COMPLETED)
    attempts.attempt_ended(session, run_id, 1, at + timedelta(hours=1), attempts.LOST)
    session.commit()

    [row] = attempt_rows(engine)
    assert row.outcome == attempts.COMPLETED
    assert usage_row(engine).slot_seconds == pytest.approx(60, rel=1e-3)


def test_open_attempts_count_up_to_now(engine: Engine, session: Session) -> None:
    make_cluster(session, fair_share_half_life_hours=1.0)
    now = utcnow()
    running, ended = team_run(session), team_run(session, team="nlp")
    for run_id, started in ((running, now - timedelta(hours=1)), (ended, now - timedelta(hours=2))):
        run = session.get(Run, run_id)
        assert run is not None
        attempts.attempt_started(session, run, 1, started)
    attempts.attempt_ended(session, ended, 1, now - timedelta(hours=1), attempts.COMPLETED)
    session.commit()

    cluster = session.get(Cluster, CLUSTER)
    assert cluster is not None
    usage = attempts.decayed_usage(session, cluster, now)
    assert usage["vision"] == pytest.approx(closed_form(HOUR, 0, HOUR))
    assert usage["nlp"] == pytest.approx(closed_form(2 * HOUR, HOUR, HOUR))
    # Another cluster's attempts are not this one's.
    other = make_cluster(session, "cpu-b")
    assert attempts.decayed_usage(session, other, now) == {}


def test_a_run_whose_node_is_lost_ends_its_attempt_as_lost(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, "requeues", requeue_on_node_loss=True, max_attempts=3)
    make_cluster(session)
    failed = team_run(session, dispatched_at=ago(61), attempt=1)
    requeued = queue_run(session, "requeues")
    set_columns(session, requeued, dispatched_at=ago(61), attempt=1, team="nlp")
    for run_id in (failed, requeued):
        run = walk(session, run_id, RunStatus.RUNNING)
        attempts.attempt_started(session, run, 1, ago(60))
        set_columns(session, run_id, running_at=ago(60))
    session.commit()
    settings = fast_watchdog()

    sweep_runs(session, client, celery, settings)  # silent: NotResponding
    set_columns(session, failed, not_responding_at=ago(30))
    set_columns(session, requeued, not_responding_at=ago(30))
    sweep_runs(session, client, celery, settings)  # Failed, and requeued

    rows = {row.run_id: row for row in attempt_rows(engine)}
    assert {rows[failed].outcome, rows[requeued].outcome} == {attempts.LOST}
    assert all(row.ended_at is not None for row in rows.values())
    with Session(engine) as fresh:
        assert {row.team for row in fresh.exec(select(TeamUsage))} == {"vision", "nlp"}


@pytest.mark.parametrize("end", ["fail", "cancel_not_responding"])
def test_a_run_ended_from_outside_closes_its_attempt(
    engine: Engine, session: Session, client: redis.Redis, end: str
) -> None:
    make_cluster(session)
    run_id = team_run(session, dispatched_at=ago(61), attempt=1)
    run = walk(session, run_id, RunStatus.RUNNING)
    attempts.attempt_started(session, run, 1, ago(60))
    session.commit()
    news = Announcements()
    if end == "fail":
        runs.fail_with_children(session, client, run_id, "stopped by hand", news)
        outcome = attempts.FAILED
    else:
        walk(session, run_id, RunStatus.NOT_RESPONDING)
        runs.cancel_with_children(session, client, run_id, news)
        outcome = attempts.CANCELED
    session.commit()

    [row] = attempt_rows(engine)
    assert row.outcome == outcome
    assert row.ended_at is not None
    assert usage_row(engine).slot_seconds == pytest.approx(60, rel=0.05)
