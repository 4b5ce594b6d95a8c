"""Job arrays in the store (``store.runs.submit_array``): N runs in one insert, checked as a
single submit is, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, event
from sqlmodel import Session, col, func, select

from runyard.errors import ClusterNotFound
from runyard.status import RunStatus
from store import run_listings, runs
from store.models import Run, RunArraySpec, RunTag
from tests.support.database import CLUSTER, DIGEST, make_cluster


def count_runs(engine: Engine) -> int:
    with Session(engine) as fresh:
        return fresh.exec(select(func.count()).select_from(Run)).one()


def test_an_array_queues_one_run_per_argument_list_in_index_order(
    engine: Engine, session: Session
) -> None:
    make_cluster(session)
    spec = RunArraySpec(
        experiment="sweep",
        cluster=CLUSTER,
        script="train.py",
        arguments_list=[["--seed", str(i)] for i in range(50)],
        environment={"environment_variables": {"A": "1"}},
        priority=3,
        tags={"sweep": "lr", "bare": None},
        display_name="lr sweep",
    )

    array_id, cluster, ids = runs.submit_array(session, spec, DIGEST, submitted_by="ann")
    session.commit()

    assert cluster == CLUSTER
    assert ids == [f"{array_id}_{i:02d}" for i in range(50)]
    with Session(engine) as fresh:
        stored = fresh.exec(select(Run).order_by(col(Run.array_index))).all()
        assert [(r.id, r.array_id, r.array_index) for r in stored] == [
            (run_id, array_id, i) for i, run_id in enumerate(ids)
        ]
        assert [r.arguments for r in stored] == [["--seed", str(i)] for i in range(50)]
        first = stored[0]
        assert first.status == RunStatus.QUEUED and first.queued_at is not None
        assert (first.cluster, first.priority, first.snapshot_digest) == (CLUSTER, 3, DIGEST)
        assert (first.display_name, first.submitted_by) == ("lr sweep", "ann")
        assert first.environment == {"environment_variables": {"A": "1"}}
        assert fresh.exec(select(func.count()).select_from(RunTag)).one() == 100
        shown = run_listings.public(first, "sweep")
        assert (shown.array_id, shown.array_index) == (array_id, 0)


def test_an_array_is_written_a_few_hundred_runs_to_a_statement(
    engine: Engine, session: Session
) -> None:
    # The run counters' trigger runs per statement: a row per statement would update one
    # counter row thousands of times in one transaction (quadratic on PostgreSQL).
    make_cluster(session)
    spec = RunArraySpec(
        experiment="sweep",
        cluster=CLUSTER,
        script="train.py",
        arguments_list=[[str(i)] for i in range(1200)],
        tags={"sweep": "wide"},
    )
    inserts: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("INSERT INTO RUN ", "INSERT INTO RUNTAG ")):
            inserts.append(statement.split("(")[0].split()[2].lower())

    event.listen(engine, "before_cursor_execute", seen)
    try:
        runs.submit_array(session, spec, DIGEST, submitted_by=None)
        session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    assert inserts == ["run"] * 3 + ["runtag"] * 3
    assert count_runs(engine) == 1200


def test_a_refused_array_stores_nothing(engine: Engine, session: Session) -> None:
    spec = RunArraySpec(
        experiment="sweep", cluster="nowhere", script="t.py", arguments_list=[["a"], ["b"]]
    )

    with pytest.raises(ClusterNotFound):
        runs.submit_array(session, spec, DIGEST, submitted_by=None)
    session.rollback()

    assert count_runs(engine) == 0


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"arguments_list": [["ok"], ["ok"], ["bad\x00"]]}, ("arguments_list",)),
        ({"arguments_list": [["ok"], ["x"] * 1001]}, ("arguments_list", 1)),
        ({"arguments_list": []}, ("arguments_list",)),
        ({"arguments_list": [[]] * 10_001}, ("arguments_list",)),
        ({"arguments_list": [["a"]], "arguments": ["b"]}, ()),
        ({"arguments_list": [["a"]], "parent_run_id": "r"}, ()),
    ],
)
def test_a_bad_array_spec_names_where(fields: dict, where: tuple) -> None:
    with pytest.raises(ValidationError) as caught:
        RunArraySpec(experiment="sweep", script="t.py", **fields)
    assert caught.value.errors()[0]["loc"] == where
