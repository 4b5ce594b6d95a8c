"""Every page query reads along an index in its own order: SQLite's plan for each
statement a listing runs has no temporary B-tree sort and no scan of the whole run table
(the runs of one cluster handed to a worker or active, no more than its slots, are the
only ones sorted)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, event
from sqlmodel import Session

from runyard.status import RunStatus
from scheduler import queue_head
from store import experiments, run_listings
from store.models import RunProperty, RunTag, utcnow
from store.queue import TeamQueue
from tests.support.database import heartbeat, make_cluster, queue_run, set_columns, walk


@contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plan(engine: Engine, statement: str, parameters: Any) -> str:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return "\n".join(str(r[-1]) for r in rows)


LISTINGS: dict[str, Callable[[Session, redis.Redis], Any]] = {
    "queue page 1": lambda s, c: run_listings.cluster_runs(s, c, "gpu-a", "queued", limit=5),
    "queue page 2": lambda s, c: run_listings.cluster_runs(
        s,
        c,
        "gpu-a",
        "queued",
        limit=5,
        cursor=run_listings.cluster_runs(s, c, "gpu-a", "queued", limit=5).next_cursor,
    ),
    "history": lambda s, c: run_listings.cluster_history(
        s,
        "gpu-a",
        limit=2,
        cursor=run_listings.cluster_history(s, "gpu-a", limit=2).next_cursor,
    ),
    "runs": lambda s, c: run_listings.list_runs(
        s, limit=3, cursor=run_listings.list_runs(s, limit=3).next_cursor
    ),
    "runs of a cluster": lambda s, c: run_listings.list_runs(s, cluster="gpu-a", limit=3),
    "runs by status": lambda s, c: run_listings.list_runs(s, statuses=[RunStatus.QUEUED], limit=3),
    "top-level runs": lambda s, c: run_listings.list_runs(s, top_level=True, limit=3),
    "experiment runs": lambda s, c: experiments.experiment_runs(
        s, "mnist", [], include_children=False, limit=3
    ),
    "experiment runs with children": lambda s, c: experiments.experiment_runs(
        s, "mnist", [], include_children=True, limit=3
    ),
    "experiments": lambda s, c: experiments.list_experiments(s, limit=3),
}


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_each_page_query_reads_along_an_index(
    name: str, engine: Engine, session: Session, client: redis.Redis
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's query plans; PostgreSQL picks plans by statistics")
    make_cluster(session, "gpu-a", nodes=1)
    heartbeat(client, "gpu-a", slots=1)
    ids = [queue_run(session, "gpu-a", priority=i % 3) for i in range(30)]
    for run_id in ids[:6]:
        walk(session, run_id, RunStatus.CANCELED)
    session.exec  # noqa: B018
    with statements(engine) as seen:
        LISTINGS[name](session, client)
    plans = [(s, plan(engine, s, p)) for s, p in seen]
    assert plans
    for statement, found in plans:
        small = (
            "dispatched_at IS NOT NULL" in statement
            or "preparing_at" in statement.split("ORDER BY")[-1]
        )  # handed-over and active runs: no more than a cluster's slots
        if "FROM run " in statement + " " and not small:
            assert "TEMP B-TREE" not in found, (statement, found)
        assert not re.search(r"\bSCAN run\b(?! USING)", found), (statement, found)


def test_a_tag_filter_reads_the_tag_index_not_the_tag_table(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    """GET /runs?tags= and ?properties=: the runs with a key (and value) come from the
    key/value index (migration 0016), whichever way the page is read."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's query plans; PostgreSQL picks plans by statistics")
    make_cluster(session, "gpu-a", nodes=1)
    ids = [queue_run(session, "gpu-a") for _ in range(6)]
    for run_id in ids[:3]:
        session.add(RunTag(run_id=run_id, key="sweep", value="a" * 300))
        session.add(RunProperty(run_id=run_id, key="seed", value="1"))
    session.commit()
    with statements(engine) as seen:
        page = run_listings.list_runs(
            session, tags={"sweep": "a" * 300}, properties={"seed": None}, limit=2
        )
    assert sorted(r.id for r in page.data) == sorted(ids[1:3])
    plans = "\n".join(plan(engine, s, p) for s, p in seen)
    assert "ix_runtag_key_value" in plans and "ix_runproperty_key_value" in plans, plans
    assert not re.search(r"\bSCAN (runtag|runproperty)\b", plans), plans


def test_the_head_of_each_teams_queue_is_read_along_the_team_queue_index(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    """A decision on a cluster with quotas reads each team's waiting runs per kind and
    priority (``store.queue.TeamQueue``): ranges of ``ix_run_team_kind_queue``, never the
    run table, never a sort."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's query plans; PostgreSQL picks plans by statistics")
    make_cluster(session, "gpu-a", nodes=2)
    ids = [queue_run(session, "gpu-a", priority=i % 3) for i in range(12)]
    for i, run_id in enumerate(ids):
        set_columns(session, run_id, team="ab"[i % 2], preemptible=i % 4 != 0)
    with statements(engine) as seen:
        for kind in (False, True):
            queue = TeamQueue(session, "gpu-a", "a", kind)
            assert queue_head.head(queue, 2, utcnow().timestamp() + 86400, 3600)
    assert seen
    for statement, parameters in seen:
        found = plan(engine, statement, parameters)
        assert "ix_run_team_kind_queue" in found, (statement, found)
        assert "TEMP B-TREE" not in found, (statement, found)
