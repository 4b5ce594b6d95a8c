"""Reading whole series of many runs (``GET /runs/{id}/metrics?recursive=true``) costs a
bounded number of statements, however many series those runs have: the points of every
series come back in one query per chunk of runs, not one query per series."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.pool.base import _ConnectionFairy
from sqlmodel import Session

from store.models import Metric, MetricPoint
from store.tracking import reads
from tests.support.database import make_cluster, queue_run


def log_series(session: Session, runs: int, series: int) -> list[str]:
    """``runs`` runs with ``series`` scalar series of two points each, written directly."""
    ids = [queue_run(session) for _ in range(runs)]
    for run_id in ids:
        for s in range(series):
            name = f"m{s}"
            session.add(Metric(run_id=run_id, name=name, kind="scalar", count=2, next_idx=2))
            for idx in range(2):
                session.add(
                    MetricPoint(
                        run_id=run_id, name=name, producer="p", seq=s * 2 + idx, idx=idx,
                        value=float(s * 10 + idx), logged_at=0.0,
                    )
                )  # fmt: skip
    session.commit()
    return ids


class Counted:
    """A driver cursor that counts what it executes."""

    def __init__(self, cursor: Any, counter: list[str]) -> None:
        self._cursor, self._counter = cursor, counter

    def execute(self, sql: str, *args: Any) -> Any:
        self._counter.append(sql)
        return self._cursor.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


@pytest.fixture
def statements(session: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement the session sends, through SQLAlchemy or the raw driver cursor."""
    counter: list[str] = []
    engine = session.get_bind()
    raw_cursor = _ConnectionFairy.cursor

    def listen(conn: Any, cursor: Any, sql: str, *rest: Any) -> None:
        counter.append(sql)

    event.listen(engine, "before_cursor_execute", listen)
    monkeypatch.setattr(
        _ConnectionFairy,
        "cursor",
        lambda self, *a, **k: Counted(raw_cursor(self, *a, **k), counter),
    )
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def statements_to_read(session: Session, ids: list[str], counter: list[str]) -> int:
    counter.clear()
    found = reads.metrics_of(session, ids)
    assert sorted(found["runs"]) == sorted(ids)
    for series in found["runs"].values():
        for s, (name, read) in enumerate(sorted(series.items(), key=lambda i: int(i[0][1:]))):
            assert name == f"m{s}" and [p[2] for p in read["points"]] == [s * 10.0, s * 10.0 + 1]
    return len(counter)


def test_reading_many_series_of_many_runs_takes_a_constant_number_of_statements(
    session: Session, statements: list[str]
) -> None:
    make_cluster(session)
    few = log_series(session, runs=2, series=2)
    many = log_series(session, runs=20, series=25)
    session.commit()

    baseline = statements_to_read(session, few, statements)
    assert statements_to_read(session, many, statements) == baseline
    session.rollback()


def test_runs_read_in_chunks_come_back_whole_and_one_query_per_chunk(
    session: Session, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_cluster(session)
    ids = log_series(session, runs=7, series=3)
    one_chunk = statements_to_read(session, ids, statements)
    monkeypatch.setattr(reads, "RUNS_PER_QUERY", 3)  # 7 runs: three chunks

    assert statements_to_read(session, ids, statements) == one_chunk + 2
    session.rollback()
