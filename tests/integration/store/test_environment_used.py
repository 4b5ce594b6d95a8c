"""What a worker reports it ran a run with (``StateChanged.environment``, with Starting) is
stored on the run whole, or not at all; a later attempt's report replaces an earlier one."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session

from protocol.messages import StateChanged
from protocol.streams import send_to_ingest
from runyard.status import RunStatus
from scheduler.ingest import Ingest
from tests.support.database import reload, set_columns
from tests.support.environments import BUILT


def report(client: redis.Redis, ingest: Ingest, run_id: str, environment: Any, **kw: Any) -> None:
    """A worker's Starting report carrying ``environment``, taken in by the ingest."""
    state = StateChanged(run_id=run_id, status=RunStatus.STARTING, environment=environment, **kw)
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


def test_a_malformed_report_leaves_an_earlier_good_one_as_it_was(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    report(client, ingest, queued_run, BUILT, attempt=1)
    set_columns(session, queued_run, status=RunStatus.QUEUED, attempt=2)

    report(client, ingest, queued_run, {**BUILT, "packages": ["x" * 513]}, attempt=2)

    assert reload(engine, queued_run).environment_used == BUILT


def test_a_later_attempts_report_replaces_the_earlier_one_and_a_superseded_one_is_ignored(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    set_columns(session, queued_run, attempt=1)
    report(client, ingest, queued_run, BUILT, attempt=1)
    # Requeued (its node was lost): the second attempt gets a rebuilt environment.
    set_columns(session, queued_run, status=RunStatus.QUEUED, attempt=2)
    rebuilt = {**BUILT, "cached": True, "build_seconds": 0.0, "packages": ["numpy==2.1.3"]}

    report(client, ingest, queued_run, rebuilt, attempt=2)
    report(client, ingest, queued_run, BUILT, attempt=1)  # the lost node's, arriving late

    assert reload(engine, queued_run).environment_used == rebuilt
