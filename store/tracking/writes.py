"""Writing tracking batches into the database: the ingest consumer's side of tracking.

Writes come from the ingest consumer only (one path for every producer). A batch is
checked against its origin (a run may write only to itself and its descendants), stripped
of what an earlier delivery already stored (producer + seq), then inserted in bulk; the
rollups of the spans it touched are refreshed in the same transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from protocol.limits import MAX_DISPLAY_NAME, NAME_LENGTH, TrackingLimits
from protocol.messages import TrackingBatch
from runyard.errors import IllegalTransition, RunNotFound
from runyard.status import TERMINAL, RunStatus
from runyard.tracking import events as ev
from store.db import insert_ignoring
from store.lifecycle import end_children, transition
from store.models import Metric, MetricPoint, Run, RunProperty, RunTag, utcnow
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
    fresh = [(seq, e) for seq, e in _not_yet_stored(session, batch) if ev.well_formed(e)]
    metrics: list[tuple[int, dict[str, Any]]] = []
    trees: dict[str, int] = {}  # runs per tree, counted once per batch (create_children(N))
    for seq, event in fresh:
        kind = event.get("k")
        if kind in ev.METRIC_KINDS:
            metrics.append((seq, event))
        elif kind == ev.CHILD:
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


def _not_yet_stored(session: Session, batch: TrackingBatch) -> list[tuple[int, dict[str, Any]]]:
    """Events of a redelivered batch that were already stored are skipped: metric points by
    (producer, seq); the other kinds are idempotent by themselves."""
    pairs = sorted(((int(seq), event) for seq, event in batch.events), key=lambda p: p[0])
    if not pairs:
        return []
    stored = set(
        session.exec(
            select(MetricPoint.seq).where(
                MetricPoint.run_id == batch.run_id,
                MetricPoint.producer == batch.producer,
                col(MetricPoint.seq).between(pairs[0][0], pairs[-1][0]),
            )
        )
    )
    return [(seq, event) for seq, event in pairs if seq not in stored]


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


def _insert_points(
    session: Session,
    run: Run,
    producer: str,
    events: list[tuple[int, dict[str, Any]]],
    limits: TrackingLimits,
) -> None:
    """The hot path of tracking: one query for the series, one bulk insert for the points."""
    names = {str(e.get("n", ""))[:NAME_LENGTH] for _, e in events}
    known = {
        m.name: m
        for m in session.exec(
            select(Metric).where(Metric.run_id == run.id, col(Metric.name).in_(names))
        )
    }
    total: int | None = None
    touched: set[str] = set()
    rows: list[dict[str, Any]] = []
    for seq, event in events:
        name = str(event.get("n", ""))[:NAME_LENGTH]
        code = event["k"]
        metric = known.get(name)
        if metric is None:
            if total is None:
                total = session.exec(select(func.count()).where(Metric.run_id == run.id)).one()
            if total >= limits.metric_names:
                log.warning(
                    "run %s: metric %r over the limit of %d names",
                    run.id,
                    name,
                    limits.metric_names,
                )
                continue
            metric = Metric(
                run_id=run.id,
                name=name,
                kind=ev.KIND_NAMES[code],
                description=str(event.get("d", "")),
                count=0,
                next_idx=0,
            )
            known[name] = metric
            total += 1
        elif not ev.compatible(ev.KIND_CODES[metric.kind], code):
            log.warning(
                "run %s: %r is a %s; dropping a %s", run.id, name, metric.kind, ev.KIND_NAMES[code]
            )
            continue
        elif metric.kind == ev.KIND_NAMES[ev.SCALAR] and code == ev.LIST:
            metric.kind = ev.KIND_NAMES[ev.LIST]
        touched.add(name)
        logged_at = float(event.get("t") or 0.0)
        start = event.get("s", metric.next_idx)  # log(..., step=) places the point
        for sub, idx, column, value in _points(event, start):
            number, text, vtype = encode_value(value)
            rows.append(
                {
                    "run_id": run.id,
                    "name": name,
                    "column": column,
                    "producer": producer,
                    "seq": seq,
                    "sub": sub,
                    "idx": idx,
                    "value": number,
                    "text": text,
                    "vtype": vtype,
                    "logged_at": logged_at,
                }
            )
        metric.count += _length(event)
        metric.next_idx = max(metric.next_idx, start + _length(event))
    for name in touched:
        session.add(known[name])
    session.flush()
    if rows:
        # Core (not ORM) bulk insert: an executemany of plain rows.
        statement = insert_ignoring(session, MetricPoint.__table__).on_conflict_do_nothing(
            index_elements=["run_id", "producer", "seq", "sub"]
        )
        session.execute(statement, rows)
        touched_spans: dict[tuple[str, str], tuple[int, int]] = {}
        for row in rows:
            key = (row["name"], row["column"])
            low, high = touched_spans.get(key, (row["idx"], row["idx"]))
            touched_spans[key] = (min(low, row["idx"]), max(high, row["idx"]))
        rollups.refresh(session, run.id, touched_spans)


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
