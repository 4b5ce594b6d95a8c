"""What runs log: writing tracking batches into the database, and reading metrics back.

Writes come from the ingest consumer only (one path for every producer). A batch is
checked against its origin (a run may write only to itself and its descendants), stripped
of what an earlier delivery already stored (producer + seq), then inserted in bulk.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, tuple_
from sqlmodel import Session, col, select

from protocol.budgets import RunBudgets, over
from protocol.limits import TrackingLimits
from protocol.messages import TrackingBatch
from runyard.errors import IllegalTransition, InvalidInput, RunNotFound
from runyard.status import TERMINAL, RunStatus
from runyard.tracking import events as ev
from store import rollups
from store.db import insert_ignoring
from store.lifecycle import end_children, transition
from store.models import (
    ROLLUP_SPAN,
    Cluster,
    Metric,
    MetricPoint,
    Run,
    RunProperty,
    RunTag,
    utcnow,
)

log = logging.getLogger(__name__)

MAX_POINTS_PER_READ = 2_000_000  # rows (of tables) count once per row


# --- writing --------------------------------------------------------------------------------


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
            display_name=str(event.get("n") or child_id)[:255],
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


def child_refusal(session: Session, parent: Run, trees: dict[str, int] | None = None) -> str | None:
    """Why ``parent`` may have no more children (its tree's budget), or None. ``trees``
    keeps the count of each tree met, so a batch of children counts its tree once."""
    root = parent.root_run_id or parent.id
    cluster = session.get(Cluster, parent.cluster) if parent.cluster else None
    budgets = RunBudgets.of(cluster.budgets if cluster else None)
    trees = {} if trees is None else trees
    if root not in trees:
        trees[root] = session.exec(select(func.count()).where(Run.root_run_id == root)).one()
    if trees[root] >= budgets.children:
        return f"run {root} is {over(budgets, 'children')}"
    return None


def _set_tag(session: Session, run: Run, event: dict[str, Any], limits: TrackingLimits) -> None:
    raw = event.get("v")
    key, value = str(event.get("n", ""))[:255], None if raw is None else str(raw)
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
            .values(run_id=run.id, key=str(key)[:255], value=str(value))
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
    names = {str(e.get("n", ""))[:255] for _, e in events}
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
        name = str(event.get("n", ""))[:255]
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


def encode_value(value: Any) -> tuple[float | None, str | None, str]:
    if isinstance(value, bool):
        return float(value), None, "b"
    if isinstance(value, int):
        return float(value), (str(value) if abs(value) > 2**53 else None), "i"
    if isinstance(value, float):
        if not math.isfinite(value):  # SQLite would store NaN as NULL: keep it as text
            return None, repr(value), "f"
        return value, None, "f"
    return None, str(value), "s"


def decode_value(value: float | None, text: str | None, vtype: str) -> Any:
    if vtype == "s":
        return text
    if vtype == "b":
        return bool(value)
    if vtype == "i":
        return int(text) if text is not None else (None if value is None else int(value))
    if value is None and text is not None:
        return float(text)  # nan, inf, -inf
    return value


# --- reading --------------------------------------------------------------------------------


def in_tree(session: Session, run_id: str, root_id: str) -> bool:
    """Whether ``run_id`` is ``root_id`` or below it, by the recorded parents (children
    made by ``child_run()`` carry their parent's id as a prefix; submitted ones do not)."""
    current: str | None = run_id
    for _ in range(64):  # children nest a few levels; a cycle cannot be stored, but be safe
        if current == root_id:
            return True
        if current is None:
            return False
        current = session.exec(select(Run.parent_run_id).where(Run.id == current)).first()
    return False


def tags_of(session: Session, run_id: str) -> dict[str, str | None]:
    query = select(RunTag.key, RunTag.value).where(RunTag.run_id == run_id)
    return dict(session.exec(query).all())


def properties_of(session: Session, run_id: str) -> dict[str, str]:
    query = select(RunProperty.key, RunProperty.value).where(RunProperty.run_id == run_id)
    return dict(session.exec(query).all())


def descendants(session: Session, run_id: str) -> list[str]:
    """The run and every run below it, parents first."""
    found, frontier = [run_id], [run_id]
    while frontier:
        children = list(session.exec(select(Run.id).where(col(Run.parent_run_id).in_(frontier))))
        found += children
        frontier = children
    return found


def metrics_of(
    session: Session, run_ids: list[str], name: str | None = None
) -> dict[str, dict[str, Any]]:
    """``{run_id: {name: {"kind", "points": [[idx, column, value], ...]}}}``."""
    query = select(Metric).where(col(Metric.run_id).in_(run_ids))
    if name is not None:
        query = query.where(Metric.name == name)
    result: dict[str, dict[str, Any]] = {rid: {} for rid in run_ids}
    metrics = list(session.exec(query))
    if not metrics:
        return result
    total = sum(m.count for m in metrics)
    if total > MAX_POINTS_PER_READ:
        raise InvalidInput(
            f"{total} points in one read (the limit is {MAX_POINTS_PER_READ}); name one "
            "metric, or read long series from /runs/{id}/metrics/{name}/history"
        )
    points: dict[tuple[str, str], list[list[Any]]] = defaultdict(list)
    keys = [(m.run_id, m.name) for m in metrics]
    rows = session.exec(
        select(
            MetricPoint.run_id,
            MetricPoint.name,
            MetricPoint.idx,
            MetricPoint.column,
            MetricPoint.value,
            MetricPoint.text,
            MetricPoint.vtype,
        )
        .where(tuple_(col(MetricPoint.run_id), col(MetricPoint.name)).in_(keys))
        .order_by(col(MetricPoint.idx), col(MetricPoint.sub))
    )
    for run_id, metric, idx, column, value, text, vtype in rows:
        points[(run_id, metric)].append([idx, column, decode_value(value, text, vtype)])
    for m in metrics:
        result[m.run_id][m.name] = {
            "kind": m.kind,
            "description": m.description,
            "count": m.count,
            "points": points[(m.run_id, m.name)],
        }
    return result


@dataclass(frozen=True)
class History:
    count: int
    points: list[list[Any]]  # [idx, value]
    downsampled: bool


def history(
    session: Session,
    run_id: str,
    name: str,
    column: str = "",
    *,
    max_points: int | None = None,
    start: int | None = None,
    end: int | None = None,
    offset: int = 0,
    limit: int = 10_000,
) -> History:
    """A series whole (paged by ``offset``/``limit``), or downsampled to at most
    ``max_points``: per bucket its first and last point and its minimum and maximum, so
    spikes show however many points there are. (Within a bucket, narrower than a pixel,
    the extremes are drawn at its middle.)"""
    where = [MetricPoint.run_id == run_id, MetricPoint.name == name, MetricPoint.column == column]
    if start is not None:
        where.append(col(MetricPoint.idx) >= start)
    if end is not None:
        where.append(col(MetricPoint.idx) <= end)
    found = rollups.blocks(session, run_id, name, column, start or 0, end)
    count = sum(b.n for b in found)
    if max_points is None or count <= max_points:
        rows = session.exec(
            select(MetricPoint.idx, MetricPoint.value, MetricPoint.text, MetricPoint.vtype)
            .where(*where)
            .order_by(col(MetricPoint.idx))
            .offset(offset)
            .limit(limit)
        )
        return History(count, [[i, decode_value(v, t, k)] for i, v, t, k in rows], False)

    buckets = max(max_points // 4, 1)
    low, high = found[0].first, found[-1].last
    width = max(-(-(high - low + 1) // buckets), 1)
    if width >= ROLLUP_SPAN:  # the stored summaries are fine enough: merge those
        summary = [(b.first, b.last, b.low, b.high) for b in rollups.merge(found, buckets)]
    else:  # a narrow range (a zoom): summarise its points
        bucket = ((col(MetricPoint.idx) - low) // width).label("bucket")
        summary = session.exec(
            select(
                func.min(MetricPoint.idx),
                func.max(MetricPoint.idx),
                func.min(MetricPoint.value),
                func.max(MetricPoint.value),
            )
            .where(*where)
            .group_by(bucket)
            .order_by(bucket)
        ).all()
    edges = sorted({int(r[0]) for r in summary} | {int(r[1]) for r in summary})
    edge_values = dict(
        session.exec(
            select(MetricPoint.idx, MetricPoint.value).where(
                *where, col(MetricPoint.idx).in_(edges)
            )
        ).all()
    )
    points: list[list[Any]] = []
    for first, last, lowest, highest in summary:
        middle = (first + last) / 2
        bucket_points = [
            [first, edge_values.get(first)],
            [middle, lowest],
            [middle, highest],
            [last, edge_values.get(last)],
        ]
        seen: set[tuple[Any, Any]] = set()
        for x, y in bucket_points:
            if (x, y) not in seen:
                seen.add((x, y))
                points.append([x, y])
    return History(count, points, True)


def latest_values(
    session: Session, run_ids: list[str], names: list[str]
) -> dict[str, dict[str, Any]]:
    """``{run_id: {name: last value}}`` of single-column series (scalars and lists)."""
    if not run_ids or not names:
        return {}
    rows = session.exec(
        select(MetricPoint.run_id, MetricPoint.name, MetricPoint.value, MetricPoint.text,
               MetricPoint.vtype)
        .join(Metric, (Metric.run_id == MetricPoint.run_id) & (Metric.name == MetricPoint.name))
        .where(
            col(MetricPoint.run_id).in_(run_ids),
            col(MetricPoint.name).in_(names),
            MetricPoint.column == "",
            MetricPoint.idx == Metric.next_idx - 1,
        )
    )  # fmt: skip
    found: dict[str, dict[str, Any]] = defaultdict(dict)
    for run_id, name, value, text, vtype in rows:
        found[run_id][name] = decode_value(value, text, vtype)
    return dict(found)


def series_names(session: Session, run_ids: list[str], limit: int = 500) -> list[str]:
    """Names of the single-column series logged by these runs (what a table can show)."""
    if not run_ids:
        return []
    query = (
        select(Metric.name)
        .where(col(Metric.run_id).in_(run_ids), col(Metric.kind).in_(ev.SINGLE_VALUE_KINDS))
        .distinct()
        .order_by(col(Metric.name))
        .limit(limit)
    )
    return list(session.exec(query))
