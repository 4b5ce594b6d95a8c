"""What ``/metrics`` reads from the database at scrape time: top-level runs counted per
cluster and status, cancels per cluster, and the histograms of queue waits and run
durations. All of it comes from the counter rows the database maintains
(``store.counters``), so a scrape costs the same with ten runs or a million."""

from __future__ import annotations

from sqlmodel import Session, select

from runyard.status import RunStatus
from store import counters
from store.models import Cluster
from store.models.counters import DURATION, WAIT


def cluster_names(session: Session) -> list[str]:
    return list(session.exec(select(Cluster.name).order_by(Cluster.name)))


def runs_by_status(session: Session) -> list[tuple[str, RunStatus, int]]:
    """``(cluster, status, count)`` of the top-level runs submitted to a cluster."""
    return counters.by_cluster_and_status(session, top_level=True)


def cancels_by_cluster(session: Session) -> dict[str, int]:
    """Top-level runs of each cluster that were cancelled."""
    return counters.cancels(session)


def wait_buckets(session: Session) -> dict[str, tuple[list[int], int]]:
    """Per cluster: runs per queue-wait bucket (``counters.WAIT_BUCKETS``, then +Inf) and
    the sum of the waits in microseconds."""
    return counters.timing_buckets(session, WAIT)


def duration_buckets(session: Session) -> dict[str, tuple[list[int], int]]:
    """Per cluster: ended runs per duration bucket (``counters.DURATION_BUCKETS``, then
    +Inf) and the sum of their durations in microseconds."""
    return counters.timing_buckets(session, DURATION)
