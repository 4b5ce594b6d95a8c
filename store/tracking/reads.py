"""Reading back what runs logged: tags, properties, whole series, latest values, and one
series paged or downsampled for a chart.

Values come back as they were logged (``store.tracking.values``). A downsampled read of a
wide range merges the stored rollups (``store.tracking.rollups``) instead of scanning every
point.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from runyard.errors import InvalidInput, NotFound
from runyard.tracking import events as ev
from store.models import (
    ROLLUP_SPAN,
    HistoryWindow,
    Metric,
    MetricHistoryPublic,
    MetricNamePublic,
    MetricNamesPublic,
    MetricPoint,
    MetricSeriesPublic,
    RunMetricsPublic,
    RunProperty,
    RunTag,
)
from store.tracking import collector, rollups
from store.tracking.values import decode_value

decode = decode_value

MAX_POINTS_PER_READ = 2_000_000  # rows (of tables) count once per row


def tags_of(session: Session, run_id: str) -> dict[str, str | None]:
    query = select(RunTag.key, RunTag.value).where(RunTag.run_id == run_id)
    return dict(session.exec(query).all())


def properties_of(session: Session, run_id: str) -> dict[str, str]:
    query = select(RunProperty.key, RunProperty.value).where(RunProperty.run_id == run_id)
    return dict(session.exec(query).all())


def metrics_of(session: Session, run_ids: list[str], name: str | None = None) -> RunMetricsPublic:
    """Whole series of these runs (every one, or the one named), point by point."""
    query = select(Metric).where(col(Metric.run_id).in_(run_ids))
    if name is not None:
        query = query.where(Metric.name == name)
    result: dict[str, dict[str, MetricSeriesPublic]] = {rid: {} for rid in run_ids}
    metrics = list(session.exec(query))
    if not metrics:
        return Points(runs=result, finite=True)
    total = sum(m.count for m in metrics)
    if total > MAX_POINTS_PER_READ:
        raise InvalidInput(
            f"{total} points in one read (the limit is {MAX_POINTS_PER_READ}); name one "
            "metric, or read long series from /runs/{id}/metrics/{name}/history"
        )
    with collector.held_off():
        points, finite = _series_points(session, sorted({m.run_id for m in metrics}), name)
    for m in metrics:
        result[m.run_id][m.name] = {
            "kind": m.kind,
            "description": m.description,
            "count": m.count,
            "points": points.get((m.run_id, m.name), []),
        }
    return Points(runs=result, finite=finite)


class Points(dict):  # type: ignore[type-arg]
    """What ``metrics_of`` returns (a ``RunMetricsPublic``), saying whether every number
    in it is finite: then a JSON encoder that has no NaN (orjson) may send it
    (``api.routes.tracking.JSONWithNaN``)."""

    def __init__(self, *, runs: dict[str, Any], finite: bool) -> None:
        super().__init__(runs=runs)
        self.finite = finite


RUNS_PER_QUERY = 500  # run ids bound in one points query (far below any driver's limit)
FETCH_ROWS = 10_000  # rows taken from the driver at a time
SERIES_POINTS = (
    'SELECT run_id, name, idx, "column", value, text, vtype FROM metricpoint '
    "WHERE run_id IN ({runs}){named} ORDER BY run_id, name, idx, sub"
)


def _series_points(
    session: Session, run_ids: list[str], name: str | None
) -> tuple[dict[tuple[str, str], list[list[Any]]], bool]:
    """Every point of these runs' series (or of the one named) as ``[idx, column, value]``
    per ``(run_id, name)``: one query per RUNS_PER_QUERY runs, however many series they
    have, read through the driver's cursor so that a read of a million points spends its
    time in the database, not in building rows."""
    connection = session.connection()
    marker = "%s" if connection.dialect.name == "postgresql" else "?"
    found: dict[tuple[str, str], list[list[Any]]] = defaultdict(list)
    finite = True  # NaN and infinities are floats stored as text (store.tracking.values)
    cursor = connection.connection.cursor()
    try:
        for start in range(0, len(run_ids), RUNS_PER_QUERY):
            chunk = run_ids[start : start + RUNS_PER_QUERY]
            sql = SERIES_POINTS.format(
                runs=", ".join([marker] * len(chunk)),
                named=f" AND name = {marker}" if name is not None else "",
            )
            cursor.execute(sql, (*chunk, name) if name is not None else tuple(chunk))
            last: tuple[str, str] | None = None
            append: Any = None
            while rows := cursor.fetchmany(FETCH_ROWS):  # streamed: never every row at once
                for run_id, series, idx, column, value, text, vtype in rows:
                    if (run_id, series) != last:  # rows come series by series
                        last = (run_id, series)
                        append = found[last].append
                    if vtype == "f" and value is not None:
                        append([idx, column, value])
                        continue
                    if vtype == "f" or (vtype == "i" and text is not None):
                        finite = False  # NaN, infinities, integers past 64 bits
                    append([idx, column, decode(value, text, vtype)])
    finally:
        cursor.close()
    return found, finite


@dataclass(frozen=True)
class History:
    count: int
    points: list[list[Any]]  # [idx, value]
    downsampled: bool


def history(
    session: Session, run_id: str, name: str, window: HistoryWindow = HistoryWindow()
) -> History:
    """A series whole (paged by ``offset``/``limit``), or downsampled to at most
    ``max_points``: per bucket its first and last point and its minimum and maximum, so
    spikes show however many points there are. (Within a bucket, narrower than a pixel,
    the extremes are drawn at its middle.)"""
    column, start, end = window.column, window.start, window.end
    max_points = window.max_points
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
            .offset(window.offset)
            .limit(window.limit)
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


def metric_names(session: Session, run_id: str) -> MetricNamesPublic:
    """Each series of the run by name, with its kind, its length and (single-column ones)
    its latest value."""
    metrics = list(
        session.exec(select(Metric).where(Metric.run_id == run_id).order_by(col(Metric.name)))
    )
    single = [m.name for m in metrics if m.kind in ev.SINGLE_VALUE_KINDS]
    latest = latest_values(session, [run_id], single).get(run_id, {})
    data = []
    for m in metrics:
        last = {"last": latest[m.name]} if m.name in latest else {}  # unset: left out
        data.append(MetricNamePublic(name=m.name, kind=m.kind, count=m.count, **last))
    return MetricNamesPublic(data=data, count=len(data))


def metric_history(
    session: Session, run_id: str, name: str, window: HistoryWindow
) -> MetricHistoryPublic:
    """One series as ``history`` reads it, named with its kind (``GET .../history``)."""
    metric = session.get(Metric, (run_id, name))
    if metric is None:
        raise NotFound(f"run {run_id} has no metric {name!r}")
    found = history(session, run_id, name, window)
    return {
        "name": name,
        "kind": metric.kind,
        "column": window.column,
        "count": found.count,
        "downsampled": found.downsampled,
        "points": found.points,
    }
