"""What ``/metrics`` reads from the database at scrape time: top-level runs counted per
cluster and status, cancels per cluster, and each started run's wait and duration."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, func, select

from store.db import as_utc
from store.models import Cluster, Run


@dataclass
class ClusterTimings:
    """Seconds from submit until a node took a run, and seconds each ended run ran."""

    waits: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    durations: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def cluster_names(session: Session) -> list[str]:
    return list(session.exec(select(Cluster.name).order_by(Cluster.name)))


def runs_by_status(session: Session) -> list[tuple[str, str, int]]:
    """``(cluster, status, count)`` of the top-level runs submitted to a cluster."""
    rows = session.exec(
        select(Run.cluster, Run.status, func.count())
        .where(col(Run.cluster).is_not(None), col(Run.parent_run_id).is_(None))
        .group_by(Run.cluster, Run.status)
    )
    return [(cluster, status, count) for cluster, status, count in rows]


def cancels_by_cluster(session: Session) -> dict[str, int]:
    rows = session.exec(
        select(Run.cluster, func.count())
        .where(
            col(Run.cluster).is_not(None),
            col(Run.canceled_at).is_not(None),
            col(Run.parent_run_id).is_(None),
        )
        .group_by(Run.cluster)
    )
    return dict(rows.all())  # type: ignore[arg-type]


def timings(session: Session) -> ClusterTimings:
    rows = session.exec(
        select(
            Run.cluster,
            Run.queued_at,
            Run.preparing_at,
            Run.running_at,
            Run.completed_at,
            Run.failed_at,
            Run.canceled_at,
        ).where(col(Run.cluster).is_not(None), col(Run.preparing_at).is_not(None))
    )
    found = ClusterTimings()
    for cluster, queued, preparing, running, completed, failed, canceled in rows:
        if queued and preparing:
            found.waits[cluster].append(_seconds(queued, preparing))
        ended = completed or failed or canceled
        if running and ended:
            found.durations[cluster].append(_seconds(running, ended))
    return found


def _seconds(start: datetime, end: datetime) -> float:
    return max((as_utc(end) - as_utc(start)).total_seconds(), 0.0)  # type: ignore[operator]
