"""Maintained counters of runs (``store.models.counters``), read instead of scanning runs.

The database keeps them: triggers on ``run`` (migration 0012) add and take away what each
row counts for on every insert, update and delete, so no write path can miss them.
``recount`` computes the same numbers by scanning every run: the backfill's oracle, the
tests' and an operator's check (``rebuild`` repairs them from it).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import Session, col, delete, func, select

from runyard.status import RunStatus
from store.db import as_utc
from store.models import ClusterCancelCount, ExperimentRunCount, Run, RunCount, RunTimingBucket
from store.models.counters import DURATION, NO_CLUSTER, WAIT

# Histogram bounds in seconds (also migration 0012's, which the triggers were made with).
WAIT_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
DURATION_BUCKETS: tuple[float, ...] = (
    1,
    10,
    60,
    300,
    900,
    3600,
    4 * 3600,
    12 * 3600,
    24 * 3600,
    7 * 24 * 3600,
)
BOUNDS = {WAIT: WAIT_BUCKETS, DURATION: DURATION_BUCKETS}


@dataclass
class Counts:
    """Every counter, as plain dictionaries (zero entries left out)."""

    runs: Counter[tuple[str, str, bool]] = field(default_factory=Counter)
    experiments: Counter[tuple[int, str, bool]] = field(default_factory=Counter)
    cancels: Counter[str] = field(default_factory=Counter)
    # (cluster, kind, bucket) -> (count, sum of microseconds)
    timings: dict[tuple[str, str, int], tuple[int, int]] = field(default_factory=dict)


def run_total(
    session: Session,
    *,
    cluster: str | None = None,
    statuses: Iterable[RunStatus] | None = None,
    top_level: bool | None = None,
) -> int:
    """How many runs match, from the per-cluster counters (a handful of rows)."""
    query = select(func.coalesce(func.sum(RunCount.n), 0))
    if cluster is not None:
        query = query.where(RunCount.cluster == cluster)
    if statuses is not None:
        query = query.where(col(RunCount.status).in_([s.value for s in statuses]))
    if top_level is not None:
        query = query.where(RunCount.top_level == top_level)
    return int(session.exec(query).one())


def experiment_total(
    session: Session,
    experiment_id: int,
    *,
    statuses: Iterable[RunStatus] | None = None,
    top_level: bool | None = None,
) -> int:
    query = select(func.coalesce(func.sum(ExperimentRunCount.n), 0)).where(
        ExperimentRunCount.experiment_id == experiment_id
    )
    if statuses is not None:
        query = query.where(col(ExperimentRunCount.status).in_([s.value for s in statuses]))
    if top_level is not None:
        query = query.where(ExperimentRunCount.top_level == top_level)
    return int(session.exec(query).one())


def experiment_totals(session: Session, ids: list[int]) -> dict[int, int]:
    """Runs per experiment (children included), for the experiments ``ids``."""
    if not ids:
        return {}
    rows = session.exec(
        select(ExperimentRunCount.experiment_id, func.sum(ExperimentRunCount.n))
        .where(col(ExperimentRunCount.experiment_id).in_(ids))
        .group_by(col(ExperimentRunCount.experiment_id))
    )
    return {experiment: int(n) for experiment, n in rows}


def by_cluster_and_status(
    session: Session, *, top_level: bool | None = None
) -> list[tuple[str, RunStatus, int]]:
    """``(cluster, status, count)`` of runs with a cluster (counts above zero)."""
    query = select(RunCount.cluster, RunCount.status, func.sum(RunCount.n)).where(
        RunCount.cluster != NO_CLUSTER
    )
    if top_level is not None:
        query = query.where(RunCount.top_level == top_level)
    rows = session.exec(query.group_by(col(RunCount.cluster), col(RunCount.status)))
    return [(c, RunStatus(s), int(n)) for c, s, n in rows if n]


def cancels(session: Session) -> dict[str, int]:
    rows = session.exec(select(ClusterCancelCount.cluster, ClusterCancelCount.n))
    return {cluster: n for cluster, n in rows if n}


def timing_buckets(session: Session, kind: str) -> dict[str, tuple[list[int], int]]:
    """Per cluster: the count in each bucket of ``kind`` (non-cumulative, the last one
    +Inf) and the sum of the values in microseconds; clusters with none left out."""
    size = len(BOUNDS[kind]) + 1
    found: dict[str, tuple[list[int], int]] = {}
    rows = session.exec(
        select(
            RunTimingBucket.cluster,
            RunTimingBucket.bucket,
            RunTimingBucket.n,
            RunTimingBucket.sum_us,
        ).where(RunTimingBucket.kind == kind)
    )
    for cluster, bucket, n, sum_us in rows:
        counts, total = found.get(cluster, ([0] * size, 0))
        counts[bucket] += n
        found[cluster] = (counts, total + sum_us)
    return {c: v for c, v in found.items() if sum(v[0])}


def read(session: Session) -> Counts:
    """Every counter as stored (rows at zero left out), to compare with ``recount``."""
    counts = Counts()
    for row in session.exec(select(RunCount)):
        if row.n:
            counts.runs[(row.cluster, row.status, row.top_level)] = row.n
    for e in session.exec(select(ExperimentRunCount)):
        if e.n:
            counts.experiments[(e.experiment_id, e.status, e.top_level)] = e.n
    for c in session.exec(select(ClusterCancelCount)):
        if c.n:
            counts.cancels[c.cluster] = c.n
    for t in session.exec(select(RunTimingBucket)):
        if t.n or t.sum_us:
            counts.timings[(t.cluster, t.kind, t.bucket)] = (t.n, t.sum_us)
    return counts


def micros(start: datetime, end: datetime) -> int:
    """Whole microseconds from ``start`` to ``end``, never below zero (as the triggers)."""
    return max((as_utc(end) - as_utc(start)) // timedelta(microseconds=1), 0)  # type: ignore[operator]


def bucket_of(kind: str, value_us: int) -> int:
    """The bucket a value falls in: the first bound it does not exceed (or +Inf)."""
    return bisect.bisect_left([round(b * 1_000_000) for b in BOUNDS[kind]], value_us)


def recount(session: Session) -> Counts:
    """Every counter computed from the runs themselves (reads every run: slow on purpose,
    never on a request path)."""
    counts = Counts()
    timings: Counter[tuple[str, str, int]] = Counter()
    sums: Counter[tuple[str, str, int]] = Counter()
    rows = session.exec(
        select(
            Run.cluster,
            Run.status,
            Run.parent_run_id,
            Run.experiment_id,
            Run.queued_at,
            Run.preparing_at,
            Run.running_at,
            Run.completed_at,
            Run.failed_at,
            Run.canceled_at,
        ).execution_options(yield_per=10_000)
    )
    for cluster, status, parent, experiment, queued, preparing, running, *ends in rows:
        top = parent is None
        status = RunStatus(status).value
        counts.runs[(cluster or NO_CLUSTER, status, top)] += 1
        counts.experiments[(experiment, status, top)] += 1
        if cluster is None:
            continue
        if ends[2] is not None and top:
            counts.cancels[cluster] += 1
        ended = ends[0] or ends[1] or ends[2]
        for kind, start, end in ((WAIT, queued, preparing), (DURATION, running, ended)):
            if start is not None and end is not None:
                value = micros(start, end)
                key = (cluster, kind, bucket_of(kind, value))
                timings[key] += 1
                sums[key] += value
    counts.timings = {key: (n, sums[key]) for key, n in timings.items()}
    return counts


def rebuild(session: Session) -> None:
    """Replace every counter with a recount (an operator's repair; the caller commits)."""
    counts = recount(session)
    for table in (RunCount, ExperimentRunCount, ClusterCancelCount, RunTimingBucket):
        session.exec(delete(table))  # type: ignore[call-overload]
    for (cluster, status, top), n in counts.runs.items():
        session.add(RunCount(cluster=cluster, status=status, top_level=top, n=n))
    for (experiment, status, top), n in counts.experiments.items():
        session.add(ExperimentRunCount(experiment_id=experiment, status=status, top_level=top, n=n))
    for cluster, n in counts.cancels.items():
        session.add(ClusterCancelCount(cluster=cluster, n=n))
    for (cluster, kind, bucket), (n, sum_us) in counts.timings.items():
        session.add(RunTimingBucket(cluster=cluster, kind=kind, bucket=bucket, n=n, sum_us=sum_us))
    session.flush()
