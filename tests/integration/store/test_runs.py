"""Runs in the store (``store/runs.py``): submit, cancel, and the log read back as a file."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from protocol import control
from protocol.messages import LogChunk
from runyard.errors import ClusterNotFound, RunFinished
from runyard.status import RunStatus
from scheduler.ingest import insert_log
from store import run_output, runs
from store.models import Experiment, Run, RunSpec
from tests.support.database import (
    CLUSTER,
    DIGEST,
    HAPPY_PATH,
    make_cluster,
    queue_run,
    reload,
    walk,
)


def test_submitting_to_an_unknown_cluster_raises_cluster_not_found(
    engine: Engine, session: Session
) -> None:
    spec = RunSpec(experiment="mnist", cluster="nowhere", script="train.py")

    with pytest.raises(ClusterNotFound):
        runs.submit(session, spec, DIGEST, submitted_by=None)
    session.rollback()

    with Session(engine) as fresh:
        assert fresh.exec(select(func.count()).select_from(Run)).one() == 0


def test_a_submitted_run_is_queued_with_its_timestamps_set(
    engine: Engine, session: Session
) -> None:
    make_cluster(session)

    run_id = queue_run(session, priority=7)

    run = reload(engine, run_id)
    assert run.id.startswith("mnist_")
    assert (run.status, run.cluster, run.priority) == (RunStatus.QUEUED, CLUSTER, 7)
    assert (run.script, run.snapshot_digest, run.dispatched_at) == ("train.py", DIGEST, None)
    assert run.not_started_at is not None
    assert run.queued_at is not None
    assert run.preparing_at is None


def test_the_experiment_is_created_on_first_submit_and_reused_after(
    engine: Engine, session: Session
) -> None:
    make_cluster(session)

    first = queue_run(session, experiment="mnist")
    second = queue_run(session, experiment="mnist")

    assert first != second
    assert reload(engine, first).experiment_id == reload(engine, second).experiment_id
    with Session(engine) as fresh:
        assert fresh.exec(select(Experiment.name)).all() == ["mnist"]


def test_cancelling_a_waiting_run_ends_it_and_no_worker_can_claim_it(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    make_cluster(session)
    run_id = queue_run(session)

    canceled = runs.cancel(session, client, run_id)
    session.commit()

    assert canceled.status == RunStatus.CANCELED
    run = reload(engine, run_id)
    assert run.status == RunStatus.CANCELED
    assert run.canceled_at is not None
    assert control.claim_run(client, run_id, "w1") == control.ClaimResult.CANCELED


def test_cancelling_a_claimed_run_asks_its_worker_to_stop(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    make_cluster(session)
    run_id = queue_run(session)
    assert control.claim_run(client, run_id, "w1") == control.ClaimResult.CLAIMED

    requested = runs.cancel(session, client, run_id)
    session.commit()

    assert requested.status == RunStatus.CANCEL_REQUESTED
    run = reload(engine, run_id)
    assert run.status == RunStatus.CANCEL_REQUESTED
    assert run.cancel_requested_at is not None
    assert run.canceled_at is None
    assert control.is_cancel_requested(client, run_id)


def test_cancelling_a_run_twice_leaves_the_stop_request_in_place(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    make_cluster(session)
    run_id = queue_run(session)
    control.claim_run(client, run_id, "w1")
    runs.cancel(session, client, run_id)
    session.commit()

    assert runs.cancel(session, client, run_id).status == RunStatus.CANCEL_REQUESTED
    assert reload(engine, run_id).status == RunStatus.CANCEL_REQUESTED


def test_cancelling_a_run_whose_worker_is_silent_ends_it_at_once(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    make_cluster(session)
    run_id = queue_run(session)
    control.claim_run(client, run_id, "w1")
    walk(session, run_id, RunStatus.RUNNING, RunStatus.NOT_RESPONDING)

    runs.cancel(session, client, run_id)
    session.commit()

    assert reload(engine, run_id).status == RunStatus.CANCELED


def test_cancelling_a_completed_run_raises_run_finished(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    make_cluster(session)
    run_id = queue_run(session)
    walk(session, run_id, *HAPPY_PATH)

    with pytest.raises(RunFinished):
        runs.cancel(session, client, run_id)

    assert reload(engine, run_id).status == RunStatus.COMPLETED
    assert not control.is_cancel_requested(client, run_id)


def test_the_log_file_has_the_logs_size_in_bytes_and_its_text_page_by_page(
    engine: Engine, queued_run: str
) -> None:
    """``user_logs/std_log.txt``: sized and read by the database of each kind, in order,
    across more chunks than one page."""
    texts = [f"line {seq} ünïcödé €\n" for seq in range(run_output.LOG_PAGE * 2 + 3)]
    with Session(engine) as session:
        for seq in reversed(range(len(texts))):  # stored out of order: read back in order
            insert_log(session, LogChunk(run_id=queued_run, seq=seq, text=texts[seq]))
        session.commit()

    whole = "".join(texts).encode()
    with Session(engine) as fresh:
        assert run_output.log_bytes(fresh, queued_run) == len(whole)
    assert b"".join(run_output.log_text(engine, queued_run)) == whole
