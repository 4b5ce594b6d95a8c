"""An action and its audit record land together, or neither does (docs/architecture.md,
"Transactions"): the route commits once, and only then tells anyone.

Through the real API. To show that a cancel cannot land without its record, the database
itself refuses the record (a trigger, as a full or failing disk would): the cancel it
records must not have happened either, and no live follower may have heard of it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from protocol import keys
from runyard.client import Client
from runyard.errors import RunyardError
from tests.support.runs import submit, write
from tests.support.services import Stack, unique

# Each way to end a run from outside: how it is called, the audit action it records, and
# the status the run ends in.
End = Callable[[Client, str, str], object]
ENDINGS: dict[str, tuple[End, str, str]] = {
    "cancel": (lambda client, run, _: client.cancel(run), "run.cancel", "Canceled"),
    "fail": (lambda client, run, _: client.fail(run, "stopped by hand"), "run.fail", "Failed"),
    "bulk cancel": (lambda client, run, _: client.cancel_many([run]), "run.cancel", "Canceled"),
    "cancel a queue": (
        lambda client, _, cluster: client.cancel_queued(cluster),
        "run.cancel",
        "Canceled",
    ),
}


def database(stack: Stack) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(stack.root / "data" / "runyard.db", timeout=30))


@pytest.fixture
def refused_audit(stack: Stack) -> Iterator[None]:
    """The database refuses every audit record of a cancel or a fail, for one test."""
    with database(stack) as db, db:
        db.execute(
            "CREATE TRIGGER refuse_stop_records BEFORE INSERT ON auditevent "
            "WHEN NEW.action IN ('run.cancel', 'run.fail') "
            "BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END"
        )
    try:
        yield
    finally:
        with database(stack) as db, db:
            db.execute("DROP TRIGGER refuse_stop_records")


@pytest.fixture
def waiting_run(stack: Stack, tmp_path: Path) -> tuple[str, str]:
    """A run that waits in the queue of a cluster no worker serves; (run id, cluster)."""
    cluster = unique("tx")
    stack.client().create_cluster(cluster, nodes=1)
    folder = write(tmp_path / "job", {"train.py": "print('never runs')\n"})
    return submit(stack.url, folder, "train.py", cluster).id, cluster


def recorded(stack: Stack, action: str) -> set[str]:
    """The targets of the audit records of ``action``."""
    return {event["target"] for event in stack.client().audit(action=action, limit=500)}


def heard_live(stack: Stack, run_id: str) -> int:
    """How many entries the run's live stream holds (what its followers were told)."""
    client = redis.Redis.from_url(stack.redis.url)
    try:
        return int(client.xlen(keys.run_live(run_id)))
    finally:
        client.close()


@pytest.mark.parametrize("ending", ENDINGS)
def test_an_end_whose_audit_record_is_refused_does_not_land(
    stack: Stack, waiting_run: tuple[str, str], refused_audit: None, ending: str
) -> None:
    end, action, _ = ENDINGS[ending]
    run_id, cluster = waiting_run

    with pytest.raises(RunyardError):
        end(stack.client(), run_id, cluster)

    assert stack.client().get_run(run_id)["status"] == "Queued"
    assert run_id not in recorded(stack, action)
    assert heard_live(stack, run_id) == 0


@pytest.mark.parametrize("ending", ENDINGS)
def test_an_end_and_its_audit_record_are_there_when_the_call_returns(
    stack: Stack, waiting_run: tuple[str, str], ending: str
) -> None:
    end, action, status = ENDINGS[ending]
    run_id, cluster = waiting_run

    end(stack.client(), run_id, cluster)

    assert stack.client().get_run(run_id)["status"] == status
    assert run_id in recorded(stack, action)


def test_a_tokens_last_use_is_stored_by_the_request_that_used_it(stack: Stack) -> None:
    """``tokens.authenticate`` notes the use; the request's own session commits it."""
    token = stack.client().create_token(name=unique("reader"), role="viewer")

    Client(stack.url, token["token"]).whoami()

    listed = {t["id"]: t for t in stack.client().list_tokens()}
    assert listed[token["id"]]["last_used_at"] is not None
