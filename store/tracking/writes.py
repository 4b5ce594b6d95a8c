"""Writing tracking batches into the database: the ingest consumer's side of tracking.

Writes come from the ingest consumer only (one path for every producer). A batch is
checked against its origin (a run may write only to itself and its descendants), stripped
of what an earlier delivery already stored (producer + seq), then inserted in bulk; the
rollups of the spans it touched are refreshed in the same transaction.
"""

from __future__ import annotations

import logging
from operator import itemgetter
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from protocol.limits import MAX_DISPLAY_NAME, NAME_LENGTH, TrackingLimits
from protocol.messages import TrackingBatch
from runyard.errors import IllegalTransition, RunNotFound
from runyard.status import TERMINAL, RunStatus
from runyard.tracking import events as ev
from store.db import insert_ignoring
from store.lifecycle import end_children, transition
from store.models import Metric, MetricProducer, Run, RunProperty, RunTag, utcnow
from store.run_tree import child_refusal, in_tree
from store.tracking import rollups
from store.tracking.values import encode_value

log = logging.getLogger(__name__)


def apply_batch(session: Session, batch: TrackingBatch, limits: TrackingLimits) -> None:
    if not ev.is_descendant(batch.run_id, batch.origin):
        log.warning("dropping batch: %s may not write to %s", batch.origin, batch.run_id)
        return
    run = session.get(Run, batch.run_id)
    if run is None:
        log.warning("dropping batch for unknown run %s", batch.run_id)
        return
    if not in_tree(session, run.id, batch.origin):  # an id prefix alone can be chosen
        log.warning("dropping batch: %s is not below %s", batch.run_id, batch.origin)
        return
    fresh = _not_yet_stored(session, batch)
    if not batch.checked:  # a body the API passed through was checked there, event by event
        fresh = [(seq, e) for seq, e in fresh if ev.well_formed(e)]
    metric_kinds = ev.METRIC_KINDS
    metrics = [pair for pair in fresh if pair[1].get("k") in metric_kinds]
    if len(metrics) < len(fresh):
        trees: dict[str, int] = {}  # runs per tree, counted once per batch (create_children)
        for _, event in fresh:
            kind = event.get("k")
            if kind == ev.CHILD:
                _create_child(session, run, event, trees)
            elif kind == ev.TAG:
                _set_tag(session, run, event, limits)
            elif kind == ev.PROPERTY:
                _add_properties(session, run, event, limits)
            elif kind == ev.STATUS:
                _finish(session, run, batch.origin, event)
            elif kind == ev.NAME:
                run.display_name = event["v"]
                session.add(run)
    if metrics:
        _insert_points(session, run, batch.producer, metrics, limits)


def _not_yet_stored(session: Session, batch: TrackingBatch) -> list[Any]:
    """The ``(seq, event)`` pairs of the batch not stored yet, in seq order, once each.

    A producer numbers its events in order and each run's entries are applied in stream
    order, so everything at or below the producer's ``MetricProducer.last_seq`` is a
    redelivery: skipped whole (metric points would be doubled; tags, properties and the
    rest are idempotent anyway). The mark moves to the batch's last seq in the same
    transaction as its events."""
    pairs: list[Any] = batch.events
    if not pairs:
        return []
    if not batch.checked:  # a body the API numbered is in order already (TrackingBatch)
        pairs = [(int(seq), event) for seq, event in pairs]
        if any(pairs[i][0] >= pairs[i + 1][0] for i in range(len(pairs) - 1)):
            # A forged batch may be out of order, and batches the ingest joined
            # (scheduler.ingest) may hold a redelivery of one another: first one wins.
            pairs.sort(key=itemgetter(0))
            pairs = [p for i, p in enumerate(pairs) if i == 0 or pairs[i - 1][0] != p[0]]
    last = pairs[-1][0]
    stored = _hold_mark(session, batch.run_id, batch.producer)
    if last > stored:
        session.execute(
            update(MetricProducer)
            .where(col(MetricProducer.run_id) == batch.run_id)
            .where(col(MetricProducer.producer) == batch.producer)
            .values(last_seq=last)
        )
    if pairs[0][0] > stored:  # the usual case: a batch delivered once
        return pairs
    return [pair for pair in pairs if pair[0] > stored]


def _hold_mark(session: Session, run_id: str, producer: str) -> int:
    """The producer's mark (-1: nothing stored), locked until the commit. Two holders of a
    shard can apply one batch at once (the old one paused past its lease): the mark's row
    is written first (SQLite: the write lock; PostgreSQL: the row), so the second reads
    the mark only once the first has committed, and skips what it stored."""
    session.execute(
        insert_ignoring(session, MetricProducer)
        .values(run_id=run_id, producer=producer, last_seq=-1)
        .on_conflict_do_nothing(index_elements=["run_id", "producer"])
    )
    return session.execute(
        select(MetricProducer.last_seq)
        .where(col(MetricProducer.run_id) == run_id)
        .where(col(MetricProducer.producer) == producer)
        .with_for_update()
    ).scalar_one()


def _create_child(
    session: Session, parent: Run, event: dict[str, Any], trees: dict[str, int]
) -> None:
    child_id = str(event.get("c", ""))
    if not ev.is_descendant(child_id, parent.id) or child_id == parent.id:
        log.warning("refusing child %r of %s", child_id, parent.id)
        return
    if session.get(Run, child_id) is not None:
        return
    refusal = child_refusal(session, parent, trees)
    if refusal is not None:
        log.warning("refusing child %r of %s: %s", child_id, parent.id, refusal)
        return
    trees[parent.root_run_id or parent.id] += 1
    now = utcnow()
    session.add(
        Run(
            id=child_id,
            experiment_id=parent.experiment_id,
            cluster=parent.cluster,
            status=RunStatus.RUNNING,
            script=parent.script,
            display_name=str(event.get("n") or child_id)[:MAX_DISPLAY_NAME],
            parent_run_id=parent.id,
            root_run_id=parent.root_run_id or parent.id,
            worker_id=parent.worker_id,
            submitted_by=parent.submitted_by,
            created_at=now,
            not_started_at=now,
            running_at=now,
        )
    )
    session.flush()


def _set_tag(session: Session, run: Run, event: dict[str, Any], limits: TrackingLimits) -> None:
    raw = event.get("v")
    key, value = str(event.get("n", ""))[:NAME_LENGTH], None if raw is None else str(raw)
    existing = session.get(RunTag, (run.id, key))
    if existing is not None:
        existing.value = value
        session.add(existing)
        return
    count = session.exec(select(func.count()).where(RunTag.run_id == run.id)).one()
    if count >= limits.tags:
        log.warning("run %s: tag %r over the limit of %d", run.id, key, limits.tags)
        return
    session.add(RunTag(run_id=run.id, key=key, value=value))
    session.flush()


def _add_properties(
    session: Session, run: Run, event: dict[str, Any], limits: TrackingLimits
) -> None:
    values = event.get("v") or {}
    count = session.exec(select(func.count()).where(RunProperty.run_id == run.id)).one()
    for key, value in values.items():
        if count >= limits.properties:
            log.warning("run %s: properties over the limit of %d", run.id, limits.properties)
            return
        result = session.execute(
            insert_ignoring(session, RunProperty)
            .values(run_id=run.id, key=str(key)[:NAME_LENGTH], value=str(value))
            .on_conflict_do_nothing(index_elements=["run_id", "key"])
        )
        count += result.rowcount or 0  # type: ignore[attr-defined]


def _finish(session: Session, run: Run, origin: str, event: dict[str, Any]) -> None:
    """Children, and interactive runs, end when their script says so. A submitted run's
    end is its process's exit, reported by the worker (which reads fail() itself); from
    outside, it is failed or cancelled through the API."""
    status = event.get("v")
    if status not in TERMINAL or (run.id == origin and run.snapshot_digest is not None):
        return  # a submitted run's own process reports its end, through its worker
    values: dict[str, Any] = {}
    if event.get("e") and status != RunStatus.COMPLETED.value:
        values["failure_reason"] = str(event["e"])[:10_000]
    try:
        transition(session, run.id, RunStatus(status), **values)
    except (IllegalTransition, RunNotFound) as exc:
        log.info("ignoring status of %s: %s", run.id, exc)
        return
    end_children(session, run.id, RunStatus(status))


# The columns of a point, in the order the rows below are built; inserted through the
# driver's own executemany (no per-row SQLAlchemy parameter processing) or COPY.
POINT_COLUMNS = (
    "run_id", "name", "column", "producer", "seq", "sub", "idx", "value", "text", "vtype",
    "logged_at",
)  # fmt: skip
_SCALAR, _SCALAR_NAME, _LIST_NAME = ev.SCALAR, ev.KIND_NAMES[ev.SCALAR], ev.KIND_NAMES[ev.LIST]
_NAMES = ", ".join(f'"{c}"' for c in POINT_COLUMNS)
# What is inserted is fresh (_not_yet_stored): no conflict to look for, no unique index.
INSERT_POINTS = f"INSERT INTO metricpoint ({_NAMES}) VALUES ({', '.join('?' * 11)})"


def _insert_points(
    session: Session,
    run: Run,
    producer: str,
    events: list[tuple[int, dict[str, Any]]],
    limits: TrackingLimits,
) -> None:
    """The hot path of tracking: one query for the series, one executemany of plain tuples
    for the points, one rollup refresh per series touched. Nothing here is per point but
    building the row."""
    run_id = run.id
    names = {str(e.get("n", ""))[:NAME_LENGTH] for _, e in events}
    known = {
        m.name: m
        for m in session.exec(
            select(Metric).where(Metric.run_id == run_id, col(Metric.name).in_(names))
        )
    }
    total: int | None = None
    # Per series: [count, next_idx] kept here and written to the Metric once at the end
    # (ORM attribute writes per event cost more than the insert itself).
    counters: dict[str, list[int]] = {}
    refused: set[str] = set()
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    spans: dict[tuple[str, str], list[int]] = {}
    for seq, event in events:
        name = event.get("n", "")
        if type(name) is not str or len(name) > NAME_LENGTH:
            name = str(name)[:NAME_LENGTH]
        if name in refused:
            continue
        code = event["k"]
        state = counters.get(name)
        if state is None:
            metric = known.get(name)
            if metric is None:
                if total is None:
                    total = session.exec(select(func.count()).where(Metric.run_id == run_id)).one()
                if total >= limits.metric_names:
                    log.warning(
                        "run %s: metric %r over the limit of %d names",
                        run_id,
                        name,
                        limits.metric_names,
                    )
                    refused.add(name)
                    continue
                metric = Metric(
                    run_id=run_id,
                    name=name,
                    kind=ev.KIND_NAMES[code],
                    description=str(event.get("d", "")),
                    count=0,
                    next_idx=0,
                )
                known[name] = metric
                total += 1
            state = counters[name] = [metric.count, metric.next_idx]
        metric = known[name]
        kind = metric.kind
        if kind != _SCALAR_NAME or code != ev.SCALAR:
            if not ev.compatible(ev.KIND_CODES[kind], code):
                log.warning(
                    "run %s: %r is a %s; dropping a %s", run_id, name, kind, ev.KIND_NAMES[code]
                )
                continue
            if kind == _SCALAR_NAME and code == ev.LIST:
                metric.kind = _LIST_NAME
        logged_at = float(event.get("t") or 0.0)
        start = event.get("s", state[1])  # log(..., step=) places the point
        if code == _SCALAR:  # most events by far: one point, no list to build
            value = event.get("v")
            if type(value) is float and value - value == 0.0:  # finite (not NaN nor inf)
                append((run_id, name, "", producer, seq, 0, start, value, None, "f", logged_at))
            else:
                number, text, vtype = encode_value(value)
                append((run_id, name, "", producer, seq, 0, start, number, text, vtype, logged_at))
            span = spans.get((name, ""))
            if span is None:
                spans[(name, "")] = [start, start]
            elif start > span[1]:
                span[1] = start
            elif start < span[0]:
                span[0] = start
            state[0] += 1
            if start >= state[1]:
                state[1] = start + 1
            continue
        for sub, idx, column, value in _points(event, start):
            number, text, vtype = encode_value(value)
            append((run_id, name, column, producer, seq, sub, idx, number, text, vtype, logged_at))
            _widen(spans, name, column, idx, idx)
        length = _length(event)
        state[0] += length
        if start + length > state[1]:
            state[1] = start + length
    for name, (count, next_idx) in counters.items():
        metric = known[name]
        metric.count, metric.next_idx = count, next_idx
        session.add(metric)
    session.flush()
    if rows:
        connection = session.connection()
        dialect = connection.dialect.name
        cursor = connection.connection.cursor()  # this transaction's own DBAPI connection
        try:
            if dialect == "postgresql":
                with cursor.copy(f"COPY metricpoint ({_NAMES}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cursor.executemany(INSERT_POINTS, rows)
        finally:
            cursor.close()
        rollups.refresh(session, run_id, {k: (v[0], v[1]) for k, v in spans.items()})


def _widen(
    spans: dict[tuple[str, str], list[int]], name: str, column: str, low: int, high: int
) -> None:
    """Stretch the index range a batch touched in the series ``(name, column)``."""
    span = spans.get((name, column))
    if span is None:
        spans[(name, column)] = [low, high]
        return
    if low < span[0]:
        span[0] = low
    if high > span[1]:
        span[1] = high


def _length(event: dict[str, Any]) -> int:
    kind, value = event["k"], event.get("v")
    if kind == ev.LIST:
        return len(value or [])
    if kind == ev.TABLE:
        return max((len(c) for c in (value or {}).values()), default=0)
    return 1


def _points(event: dict[str, Any], start: int) -> list[tuple[int, int, str, Any]]:
    """(sub, idx, column, value) of each value one logging call produced."""
    kind, value = event["k"], event.get("v")
    if kind == ev.LIST:
        return [(i, start + i, "", v) for i, v in enumerate(value or [])]
    if kind == ev.ROW:
        return [(i, start, str(c), v) for i, (c, v) in enumerate((value or {}).items())]
    if kind == ev.TABLE:
        points, sub = [], 0
        for column, values in (value or {}).items():
            for i, v in enumerate(values):
                points.append((sub, start + i, str(column), v))
                sub += 1
        return points
    return [(0, start, "", value)]
