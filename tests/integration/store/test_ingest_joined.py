"""The ingest applies a batch of stream entries together (``scheduler.ingest.joined``):
each run's tracking batches become one per producer. What is stored must be exactly what
applying them one entry at a time stores; replays and bad entries behave as before."""

from __future__ import annotations

import math
import threading
from typing import Any

import redis
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from protocol.messages import Entry, TrackingBatch
from protocol.streams import send_to_ingest
from runyard.tracking import events as ev
from scheduler.ingest import Ingest
from store.models import Cluster, Metric, MetricPoint, MetricRollup, RunTag
from store.tracking import reads
from tests.support.database import CLUSTER, make_cluster, pending_count, queue_run


def logged(run_id: str, producer: str = "p") -> list[Entry]:
    """A run's tracking in several small batches of every kind, as a client sends them."""
    batches: list[list[dict[str, Any]]] = [
        [
            {"r": run_id, "k": ev.SCALAR, "n": "loss", "v": 1.0 / (i + 1), "t": 1.0}
            for i in range(5)
        ],
        [
            {"r": run_id, "k": ev.LIST, "n": "acc", "v": [0.1, 0.2, math.nan]},
            {"r": run_id, "k": ev.TAG, "n": "phase", "v": "warmup"},
        ],
        [
            {"r": run_id, "k": ev.ROW, "n": "pr", "v": {"p": 0.5, "r": 0.25}},
            {"r": run_id, "k": ev.SCALAR, "n": "loss", "v": math.inf, "t": 2.0},
            {"r": run_id, "k": ev.SCALAR, "n": "step", "v": 7, "s": 40},
        ],
        [
            {"r": run_id, "k": ev.TABLE, "n": "curve", "v": {"x": [1, 2], "y": [3, 4]}},
            {"r": run_id, "k": ev.TAG, "n": "phase", "v": "train"},
            {"r": run_id, "k": ev.SCALAR, "n": "loss", "v": "diverged"},
        ],
    ]
    entries: list[Entry] = []
    seq = 0
    for events in batches:
        numbered = [[seq + i, e] for i, e in enumerate(events)]
        entries.append(TrackingBatch(run_id=run_id, origin=run_id, producer=producer,
                                     events=numbered))  # fmt: skip
        seq += len(events)
    return entries


def stored(engine: Engine, run_id: str) -> dict[str, Any]:
    """Everything tracking keeps for a run, without its id (runs compare with each other)."""
    with Session(engine) as session:
        points = session.exec(
            select(MetricPoint.name, MetricPoint.column, MetricPoint.seq, MetricPoint.sub,
                   MetricPoint.idx, MetricPoint.value, MetricPoint.text, MetricPoint.vtype)
            .where(MetricPoint.run_id == run_id)
            .order_by(col(MetricPoint.name), col(MetricPoint.seq), col(MetricPoint.sub))
        ).all()  # fmt: skip
        metrics = session.exec(
            select(Metric.name, Metric.kind, Metric.count, Metric.next_idx)
            .where(Metric.run_id == run_id)
            .order_by(col(Metric.name))
        ).all()
        rollups = session.exec(
            select(MetricRollup.name, MetricRollup.column, MetricRollup.bucket,
                   MetricRollup.first_idx, MetricRollup.last_idx, MetricRollup.n)
            .where(MetricRollup.run_id == run_id)
            .order_by(col(MetricRollup.name), col(MetricRollup.column))
        ).all()  # fmt: skip
        tags = session.exec(select(RunTag.key, RunTag.value).where(RunTag.run_id == run_id)).all()
        read = reads.metrics_of(session, [run_id])["runs"][run_id]
    return {
        # NaN != NaN: compare the stored text instead (what reads back as NaN)
        "points": [tuple(repr(v) for v in p) for p in points],
        "metrics": list(metrics),
        "rollups": list(rollups),
        "tags": list(tags),
        "read": repr(read),
    }


def interleaved(*per_run: list[Entry]) -> list[Entry]:
    """Round robin: the way batches of runs logging at once reach the stream."""
    out: list[Entry] = []
    for i in range(max(len(e) for e in per_run)):
        out += [entries[i] for entries in per_run if i < len(entries)]
    return out


def three_runs(session: Session) -> list[str]:
    if session.get(Cluster, CLUSTER) is None:
        make_cluster(session)
    return [queue_run(session) for _ in range(3)]


def test_batches_of_many_runs_applied_together_store_what_one_by_one_stores(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    together, one_by_one = three_runs(session), three_runs(session)

    send_to_ingest(client, interleaved(*[logged(r) for r in together]))
    ingest.process(ingest.read(block_ms=100))
    for run_id in one_by_one:
        for entry in logged(run_id):
            send_to_ingest(client, [entry])
            ingest.process(ingest.read(block_ms=100))

    expected = stored(engine, one_by_one[0])
    assert [(m[0], m[1], m[2]) for m in expected["metrics"]] == [
        ("acc", "list", 3), ("curve", "table", 2), ("loss", "scalar", 7),
        ("pr", "row", 1), ("step", "scalar", 1),
    ]  # fmt: skip
    assert expected["tags"] == [("phase", "train")]
    assert all(stored(engine, r) == expected for r in together + one_by_one[1:])
    assert pending_count(client) == 0


def test_a_replayed_joined_batch_changes_nothing(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    runs = three_runs(session)
    entries = interleaved(*[logged(r) for r in runs])
    send_to_ingest(client, entries)
    ingest.process(ingest.read(block_ms=100))
    before = [stored(engine, r) for r in runs]

    # Replayed whole, and (a redelivery within one read) twice over in one batch.
    send_to_ingest(client, entries + entries)
    ingest.process(ingest.read(block_ms=100))

    assert [stored(engine, r) for r in runs] == before


def test_a_redelivery_in_the_same_batch_as_the_first_delivery_is_stored_once(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    joined_run, alone = three_runs(session)[:2]
    first = logged(joined_run)
    send_to_ingest(client, [*first[:2], first[0], first[1], *first[2:]])
    ingest.process(ingest.read(block_ms=100))
    send_to_ingest(client, logged(alone))
    ingest.process(ingest.read(block_ms=100))

    assert stored(engine, joined_run) == stored(engine, alone)


def test_a_bad_entry_in_a_joined_batch_drops_only_itself(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    good, hurt, alone = three_runs(session)
    entries = logged(hurt)
    bad = TrackingBatch(
        run_id=hurt, origin=hurt, producer="p", events=[["not a number", {"r": hurt}]]
    )
    send_to_ingest(client, interleaved(logged(good), [*entries[:2], bad, *entries[2:]]))
    ingest.process(ingest.read(block_ms=100))
    send_to_ingest(client, logged(alone))
    ingest.process(ingest.read(block_ms=100))

    assert stored(engine, good) == stored(engine, alone)
    assert stored(engine, hurt) == stored(engine, alone)
    assert pending_count(client) == 0


def test_points_stored_before_the_producer_marks_are_not_stored_again_on_a_replay(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest
) -> None:
    """Migration 0015 gives each (run, producer) of the points already stored its mark, so
    a batch redelivered across the upgrade is still recognised; its downgrade brings the
    unique index back."""
    run_id = three_runs(session)[0]
    session.close()
    _alembic(engine, "downgrade", "0014")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO metric (run_id, name, kind, description, count, next_idx) "
            f"VALUES ('{run_id}', 'loss', 'scalar', '', 2, 2)"
        )
        conn.exec_driver_sql(
            'INSERT INTO metricpoint (run_id, name, "column", producer, seq, sub, idx, value, '
            f"vtype, logged_at) VALUES ('{run_id}', 'loss', '', 'p', 0, 0, 0, 1.0, 'f', 1.0), "
            f"('{run_id}', 'loss', '', 'p', 1, 0, 1, 0.5, 'f', 1.0)"
        )
    _alembic(engine, "upgrade", "head")

    events = [[i, {"r": run_id, "k": ev.SCALAR, "n": "loss", "v": v}] for i, v in
              enumerate([1.0, 0.5, 0.25])]  # fmt: skip
    send_to_ingest(client, [TrackingBatch(run_id=run_id, origin=run_id, producer="p",
                                          events=events)])  # fmt: skip
    ingest.process(ingest.read(block_ms=100))

    with Session(engine) as fresh:
        found = reads.metrics_of(fresh, [run_id])["runs"][run_id]["loss"]
    assert (found["count"], found["points"]) == (
        3,
        [[0, "", 1.0], [1, "", 0.5], [2, "", 0.25]],
    )


def _alembic(engine: Engine, what: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from store.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, what)(config, revision)


def test_one_batch_applied_by_two_holders_at_once_is_stored_once(
    engine: Engine, session: Session
) -> None:
    """An old shard holder paused inside its transaction and the new holder apply the same
    batch at once: the producer's mark is held until the first commits, so the second
    sees it and skips the batch (no unique index over points would catch a double)."""
    from protocol.limits import TrackingLimits
    from store import runs as run_service
    from store.tracking.writes import apply_batch

    def scalars(run_id: str, first: int) -> TrackingBatch:
        events = [[first + i, {"r": run_id, "k": ev.SCALAR, "n": "loss", "v": float(i),
                               "t": 1.0}] for i in range(10)]  # fmt: skip
        return TrackingBatch(run_id=run_id, origin=run_id, producer="p", events=events)

    run = run_service.start_interactive(session, "exp", None, None, None)
    session.commit()
    with Session(engine) as first:
        apply_batch(first, scalars(run.id, 0), TrackingLimits())
        first.commit()
    again = scalars(run.id, 10)
    old_holder = Session(engine)
    apply_batch(old_holder, again, TrackingLimits())
    old_holder.flush()  # its writes are made, its commit not yet

    failures: list[BaseException] = []

    def new_holder() -> None:
        try:
            with Session(engine) as new:
                apply_batch(new, again, TrackingLimits())
                new.commit()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    thread = threading.Thread(target=new_holder)
    thread.start()
    thread.join(1.0)  # gives it the chance to reach the mark while the old one holds it
    old_holder.commit()
    old_holder.close()
    thread.join()
    assert not failures
    with Session(engine) as check:
        points = check.exec(select(MetricPoint.seq).where(MetricPoint.run_id == run.id)).all()
    assert sorted(points) == list(range(20))
