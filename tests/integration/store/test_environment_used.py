"""What a worker reports it ran a run with (``StateChanged.environment``, with Starting) is
stored on the run whole, or not at all, once the run has moved to Starting; a requeue
clears it and a later attempt's report replaces an earlier one."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine
from sqlmodel import Session

from protocol.messages import StateChanged
from protocol.streams import send_to_ingest
from runyard.status import RunStatus
from scheduler.ingest import Ingest
from scheduler.service import sweep_runs
from store.lifecycle import transition
from store.models import utcnow
from tests.support.database import (
    ago,
    fast_watchdog,
    make_cluster,
    queue_run,
    reload,
    set_columns,
    walk,
)
from tests.support.environments import BUILT


def report(
    client: redis.Redis,
    ingest: Ingest,
    run_id: str,
    environment: Any,
    status: RunStatus = RunStatus.STARTING,
    **kw: Any,
) -> None:
    """A worker's report (Starting, unless told) carrying ``environment``, taken in by the
    ingest."""
    state = StateChanged(run_id=run_id, status=status, environment=environment, **kw)
    send_to_ingest(client, [state])
    ingest.process(ingest.read(block_ms=100))


def test_the_environment_reported_with_starting_is_stored_on_the_run(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    report(client, ingest, queued_run, BUILT)

    run = reload(engine, queued_run)
    assert run.status == RunStatus.STARTING
    assert run.environment_used == BUILT


def test_a_report_that_leaves_fields_out_is_stored_with_their_defaults(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    report(client, ingest, queued_run, {"name": "plain", "version": None})

    assert reload(engine, queued_run).environment_used == {
        "name": "plain",
        "version": None,
        "hash": None,
        "spec_hash": None,
        "packages": [],
        "image": None,
        "venv": None,
        "cached": True,
        "build_seconds": 0.0,
    }


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ({**BUILT, "packages": [f"p{i}==1" for i in range(2001)]}, "at most 2000 items"),
        ({**BUILT, "packages": ["numpy==" + "1" * 600]}, "at most 512 characters"),
        ({**BUILT, "hash": "../../etc/passwd"}, "hash"),
        ({**BUILT, "cached": "yes"}, "cached"),
        ({**BUILT, "build_seconds": -1}, "build_seconds"),
        ({**BUILT, "secret": "x"}, "secret"),
        (["numpy==2.1.3"], "expected an object"),
    ],
    ids=["too-many-packages", "package-too-long", "hash", "cached", "seconds", "extra", "list"],
)
def test_a_malformed_report_is_dropped_whole_and_its_state_still_applies(
    engine: Engine,
    client: redis.Redis,
    ingest: Ingest,
    queued_run: str,
    caplog: pytest.LogCaptureFixture,
    bad: Any,
    said: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="scheduler.ingest"):
        report(client, ingest, queued_run, bad)

    run = reload(engine, queued_run)
    assert run.status == RunStatus.STARTING
    assert run.environment_used is None
    [warning] = [r.getMessage() for r in caplog.records if queued_run in r.getMessage()]
    assert "dropping the environment reported" in warning and said in warning


def handed_out_again(session: Session, run_id: str, attempt: int) -> None:
    """The run (back in its queue) was handed to a worker as ``attempt``."""
    set_columns(session, run_id, status=RunStatus.QUEUED, attempt=attempt, dispatched_at=utcnow())


def test_a_malformed_report_leaves_an_earlier_good_one_as_it_was(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    handed_out_again(session, queued_run, attempt=1)
    report(client, ingest, queued_run, BUILT, attempt=1)
    handed_out_again(session, queued_run, attempt=2)

    report(client, ingest, queued_run, {**BUILT, "packages": ["x" * 513]}, attempt=2)

    assert reload(engine, queued_run).environment_used == BUILT


def test_a_later_attempts_report_replaces_the_earlier_one_and_a_superseded_one_is_ignored(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    handed_out_again(session, queued_run, attempt=1)
    report(client, ingest, queued_run, BUILT, attempt=1)
    # Requeued (its node was lost): the second attempt gets a rebuilt environment.
    handed_out_again(session, queued_run, attempt=2)
    rebuilt = {**BUILT, "cached": True, "build_seconds": 0.0, "packages": ["numpy==2.1.3"]}

    report(client, ingest, queued_run, rebuilt, attempt=2)
    report(client, ingest, queued_run, BUILT, attempt=1)  # the lost node's, arriving late

    assert reload(engine, queued_run).environment_used == rebuilt


def test_a_starting_report_the_lifecycle_refuses_records_nothing(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    walk(session, queued_run, RunStatus.CANCELED)  # canceled while its worker was building

    report(client, ingest, queued_run, BUILT)

    run = reload(engine, queued_run)
    assert (run.status, run.environment_used) == (RunStatus.CANCELED, None)


def test_an_environment_sent_with_another_state_than_starting_is_not_recorded(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    report(client, ingest, queued_run, BUILT, status=RunStatus.PREPARING)

    run = reload(engine, queued_run)
    assert (run.status, run.environment_used) == (RunStatus.PREPARING, None)


def test_a_run_requeued_after_its_node_was_lost_has_no_environment_until_it_starts_again(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery, ingest: Ingest
) -> None:
    make_cluster(session, requeue_on_node_loss=True, max_attempts=2)
    run_id = queue_run(session)
    set_columns(session, run_id, attempt=1, dispatched_at=ago(61))
    report(client, ingest, run_id, BUILT, attempt=1)
    transition(session, run_id, RunStatus.RUNNING, at=ago(60))
    walk(session, run_id, RunStatus.NOT_RESPONDING)
    set_columns(session, run_id, not_responding_at=ago(30))  # silent past failed_after

    sweep_runs(session, client, celery, fast_watchdog())

    run = reload(engine, run_id)
    assert (run.status, run.environment_used) == (RunStatus.QUEUED, None)
    set_columns(session, run_id, attempt=2, dispatched_at=ago(1))  # handed to a new worker
    rebuilt = {**BUILT, "venv": "/var/cache/runyard/venvs/" + "1" * 32, "cached": False}
    report(client, ingest, run_id, rebuilt, attempt=2)
    assert reload(engine, run_id).environment_used == rebuilt
