"""The counters the database keeps (migration 0012's triggers) always equal a recount of
the runs, whatever wrote them: submits, every kind of state change, cancels, requeues,
priority changes, a deleted cluster, child runs, rows inserted and deleted by plain SQL;
and what ``/metrics`` reports from them equals what scanning every run reported before."""

from __future__ import annotations

import bisect
import random
from collections import defaultdict
from datetime import timedelta

import redis
import sqlalchemy
from alembic import command
from alembic.config import Config
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session, col, select, update

from api.metrics import RunyardCollector
from runyard.status import RunStatus
from store import clusters, counters, runs
from store.announcements import Announcements
from store.db import MIGRATIONS, as_utc, make_engine, migrate
from store.lifecycle import requeue, transition
from store.models import Run, RunSpec
from tests.support.database import DIGEST, make_cluster, queue_run

S = RunStatus
PATHS = [
    [S.PREPARING, S.RUNNING, S.COMPLETED],
    [S.PREPARING, S.STARTING, S.RUNNING, S.FAILED],
    [S.CANCELED],
    [S.PREPARING, S.RUNNING, S.NOT_RESPONDING],
    [S.PREPARING, S.RUNNING, S.CANCEL_REQUESTED, S.CANCELED],
    [S.PREPARING],
    [],
]


def mixed_history(session: Session, client: redis.Redis, seed: int) -> None:
    """Runs on three clusters (one deleted at the end), with children, moved through
    random paths, some requeued, some cancelled from outside, some reprioritised, and rows
    written behind the services' backs."""
    rng = random.Random(seed)
    for name in ("c-a", "c-b", "c-gone"):
        make_cluster(session, name, nodes=2)
    ids = []
    for i in range(60):
        cluster = rng.choice(["c-a", "c-b", "c-gone"])
        ids.append(queue_run(session, cluster, experiment=rng.choice(["e1", "e2"])))
        if i % 7 == 0:
            spec = RunSpec(experiment="e1", cluster=cluster, script="t.py", parent_run_id=ids[-1])
            ids.append(runs.submit(session, spec, DIGEST, submitted_by=None).id)
            session.commit()
    runs.start_interactive(session, "e2", None, None)
    for run_id in ids:
        run = session.get(Run, run_id)
        assert run is not None
        # waits and durations of every size, exactly on bucket bounds too
        back = rng.choice([0.1, 1, 5, 30, 3600, 2 * 24 * 3600, 0.25, 7])
        session.execute(
            update(Run)
            .where(col(Run.id) == run_id)
            .values(queued_at=as_utc(run.queued_at) - timedelta(seconds=back))
        )
        for status in rng.choice(PATHS):
            try:
                transition(session, run_id, status)
            except Exception:
                break
        if rng.random() < 0.1 and session.get(Run, run_id).status == S.NOT_RESPONDING:  # type: ignore[union-attr]
            requeue(session, run_id)
        session.commit()
    news = Announcements()
    waiting = session.exec(select(Run.id).where(Run.status == S.QUEUED)).all()
    runs.cancel_many(session, client, list(waiting[:5]), news)
    session.commit()
    waiting = session.exec(select(Run.id).where(Run.status == S.QUEUED)).all()
    for run_id in waiting[:5]:
        runs.set_priority(session, run_id, rng.randint(-5, 5))
    session.commit()
    live = clusters.delete_cluster(session, "c-gone", force=True)
    runs.cancel_many(session, client, live, news)
    clusters.finish_delete(session, "c-gone")
    session.commit()
    # behind the services' backs: plain SQL, as a tool or a benchmark might write
    first = session.get(Run, ids[0])
    assert first is not None
    copy = {**first.model_dump(), "id": "copied", "status": S.COMPLETED}
    session.execute(sqlalchemy.insert(Run).values([copy]))
    session.execute(sqlalchemy.delete(Run).where(col(Run.id) == "copied"))
    session.execute(sqlalchemy.insert(Run).values([{**copy, "id": "kept"}]))
    session.commit()


def test_counters_equal_a_recount_after_every_kind_of_write(
    session: Session, client: redis.Redis
) -> None:
    mixed_history(session, client, seed=16)

    assert counters.read(session) == counters.recount(session)
    assert counters.recount(session).cancels  # the history did cancel some


def test_times_a_hair_before_a_whole_second_are_counted_to_the_microsecond(
    session: Session,
) -> None:
    # SQLite's date functions keep milliseconds: read whole, '...:54.999700' is second 55.
    make_cluster(session, "edge")
    run_id = queue_run(session, "edge")
    queued = as_utc(session.get(Run, run_id).queued_at).replace(microsecond=999_700)  # type: ignore[union-attr]
    session.execute(update(Run).where(col(Run.id) == run_id).values(queued_at=queued))
    transition(session, run_id, S.PREPARING, at=queued + timedelta(seconds=4, microseconds=400))
    session.commit()

    assert counters.read(session) == counters.recount(session)
    [(_, total_us)] = counters.timing_buckets(session, "wait").values()
    assert total_us == 4_000_400


def test_rebuild_repairs_counters_to_the_recount(session: Session, client: redis.Redis) -> None:
    mixed_history(session, client, seed=7)
    session.execute(sqlalchemy.text("UPDATE runcount SET n = n + 3"))
    session.commit()

    counters.rebuild(session)
    session.commit()

    assert counters.read(session) == counters.recount(session)


def test_the_upgrade_fills_the_counters_from_the_runs_already_stored(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        migrate(engine)
        with Session(engine) as session:
            make_cluster(session, "old")
            for _ in range(5):
                run_id = queue_run(session, "old")
                for status in (S.PREPARING, S.RUNNING, S.COMPLETED):
                    transition(session, run_id, status)
                session.commit()
            queue_run(session, "old")
        # Back to the schema before counters (the runs stay), then up again: the runs
        # are what a database upgraded from 0011 holds.
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0011")
        migrate(engine)
        with Session(engine) as session:
            found = counters.read(session)
            assert found == counters.recount(session)
            assert found.runs[("old", "Completed", True)] == 5
    finally:
        engine.dispose()


# --- /metrics against the scan it replaced ------------------------------------------------


def old_scan(engine: Engine) -> dict[str, float]:
    """What /metrics reported before counters, computed by scanning every run (the
    oracle), as ``name{labels}`` -> value."""
    from api.metrics import DURATION_BUCKETS, WAIT_BUCKETS

    found: dict[str, float] = {}
    waits: dict[str, list[float]] = defaultdict(list)
    durations: dict[str, list[float]] = defaultdict(list)
    by: dict[tuple[str, str], int] = defaultdict(int)
    cancels: dict[str, int] = defaultdict(int)
    with Session(engine) as session:
        for run in session.exec(select(Run)):
            if run.cluster is None:
                continue
            if run.parent_run_id is None:
                by[(run.cluster, run.status.value)] += 1
                if run.canceled_at is not None:
                    cancels[run.cluster] += 1
            if run.queued_at and run.preparing_at:
                waits[run.cluster].append(seconds(run.queued_at, run.preparing_at))
            ended = run.completed_at or run.failed_at or run.canceled_at
            if run.running_at and ended:
                durations[run.cluster].append(seconds(run.running_at, ended))
    for (cluster, status), n in by.items():
        found[f'runyard_runs{{cluster="{cluster}",status="{status}"}}'] = n
    for cluster, n in cancels.items():
        found[f'runyard_cancels_total{{cluster="{cluster}"}}'] = n
    for name, values, buckets in (
        ("runyard_queue_wait_seconds", waits, WAIT_BUCKETS),
        ("runyard_run_duration_seconds", durations, DURATION_BUCKETS),
    ):
        for cluster, seen in values.items():
            ordered = sorted(seen)
            for bound in (*buckets, float("inf")):
                le = "+Inf" if bound == float("inf") else str(bound)
                key = f'{name}_bucket{{cluster="{cluster}",le="{le}"}}'
                found[key] = bisect.bisect_right(ordered, bound)
            found[f'{name}_count{{cluster="{cluster}"}}'] = len(ordered)
            found[f'{name}_sum{{cluster="{cluster}"}}'] = sum(ordered)
    return found


def seconds(start, end) -> float:  # type: ignore[no-untyped-def]
    return max((as_utc(end) - as_utc(start)).total_seconds(), 0.0)


class Services:
    def __init__(self, engine: Engine, client: redis.Redis) -> None:
        self.engine, self.redis = engine, client


def test_metrics_from_counters_equal_the_scan_they_replace(
    engine: Engine, session: Session, client: redis.Redis
) -> None:
    mixed_history(session, client, seed=3)
    registry = CollectorRegistry()
    registry.register(RunyardCollector(Services(engine, client)))
    text = generate_latest(registry).decode()
    reported = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            reported[name] = float(value)

    expected = old_scan(engine)

    for name, value in expected.items():
        assert reported.get(name) == (value if "_sum" not in name else reported.get(name)), name
        if "_sum" in name:
            assert abs(reported[name] - value) < 1e-6, name
    counted = {k: v for k, v in reported.items() if k.startswith(("runyard_runs{",))}
    assert counted == {k: v for k, v in expected.items() if k.startswith("runyard_runs{")}
