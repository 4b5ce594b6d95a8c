"""A run's state transitions (``store/lifecycle.py``): each state stamped once, and the moves
the lifecycle forbids refused without a change."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from runyard.errors import IllegalTransition, RunFinished
from runyard.status import TIMESTAMP_FIELD, RunStatus
from store.lifecycle import transition
from store.models import utcnow
from tests.support.database import HAPPY_PATH, make_cluster, queue_run, reload, same_instant, walk


def test_a_run_walks_to_completed_stamping_each_state(engine: Engine, session: Session) -> None:
    make_cluster(session)
    run_id = queue_run(session)
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
    run_id = queue_run(session)
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
    run_id = queue_run(session)
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
    run_id = queue_run(session)
    before = reload(engine, run_id)

    with pytest.raises(IllegalTransition) as raised:
        transition(session, run_id, RunStatus.FINALIZING)
    session.commit()

    assert not isinstance(raised.value, RunFinished)
    after = reload(engine, run_id)
    assert after.status == RunStatus.QUEUED
    assert after.finalizing_at is None
    assert after.model_dump() == before.model_dump()
