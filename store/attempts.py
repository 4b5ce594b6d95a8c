"""Run attempts and team usage: each hand-over of a run to a worker, from the slot being
taken to its release, and each team's recent usage of a cluster decayed for fair share.

Usage accounting (``store.usage``) sums the attempts; admission (``scheduler.admission``)
reads the decayed usage, which is kept up to date as attempts end, so neither sums a
cluster's history on the hot path.

Decay: usage at time ``u`` weighs ``2^(-(T-u)/H)`` at time ``T`` (``H``: the cluster's
half-life), so an interval ``[s, e]`` of one slot weighs
``H/ln2 * (2^(-(T-e)/H) - 2^(-(T-s)/H))`` at ``T``, and a value decayed to ``T`` is worth
``2^(-(T'-T)/H)`` of itself at ``T'``. One ``TeamUsage`` row per (cluster, team) holds the
ended attempts' sum decayed to its ``as_of``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime

from sqlmodel import Session, col, select, update

from store.db import as_utc, insert_ignoring
from store.models import Cluster, Run, RunAttempt, TeamUsage
from store.models.teams import NO_TEAM

# Outcomes of an attempt (``RunAttempt.outcome``).
COMPLETED, FAILED, CANCELED, PREEMPTED, LOST = (
    "completed",
    "failed",
    "canceled",
    "preempted",
    "lost",
)

DEFAULT_HALF_LIFE_HOURS = 168.0  # a cluster's default (``Cluster.fair_share_half_life_hours``)


def attempt_started(session: Session, run: Run, attempt: int, at: datetime, gpus: int = 0) -> None:
    """Record that ``attempt`` of ``run`` holds a slot since ``at`` (its first report from
    a worker). Idempotent: a replayed report changes nothing."""
    if run.cluster is None:  # never held a slot of any cluster (an interactive run, a child)
        return
    session.execute(
        insert_ignoring(session, RunAttempt)
        .values(
            run_id=run.id,
            attempt=attempt,
            cluster=run.cluster,
            team=run.team or NO_TEAM,
            submitted_by=run.submitted_by,
            gpus=gpus,
            started_at=at,
        )
        .on_conflict_do_nothing(index_elements=["run_id", "attempt"])
    )


def attempt_ended(
    session: Session,
    run_id: str,
    attempt: int,
    at: datetime,
    outcome: str,
    preempted_by: str | None = None,
) -> None:
    """Close the attempt at ``at`` and fold its slot- and GPU-seconds into its team's
    decayed usage of the cluster. Idempotent: an attempt already ended stays as it was."""
    opened = session.execute(
        select(RunAttempt.cluster, RunAttempt.team, RunAttempt.gpus, RunAttempt.started_at).where(
            col(RunAttempt.run_id) == run_id,
            col(RunAttempt.attempt) == attempt,
            col(RunAttempt.ended_at).is_(None),
        )
    ).first()
    if opened is None:
        return  # never started (ended before any worker reported it), or already closed
    cluster, team, gpus, started = opened
    started = as_utc(started)
    assert started is not None
    # Clocks differ (the watchdog's is Redis', the start the worker's): never a negative span.
    ended = max(as_utc(at) or at, started)
    closed = session.execute(
        update(RunAttempt)
        .where(
            col(RunAttempt.run_id) == run_id,
            col(RunAttempt.attempt) == attempt,
            col(RunAttempt.ended_at).is_(None),
        )
        .values(ended_at=ended, outcome=outcome, preempted_by=preempted_by)
    )
    if closed.rowcount != 1:  # type: ignore[attr-defined]
        return  # another process closed it meanwhile, and folded it
    _fold(session, cluster, team, started, ended, gpus, half_life_seconds(session, cluster))


def close_open_attempt(session: Session, run: Run, at: datetime, outcome: str) -> None:
    """``attempt_ended`` of the run's current attempt, when it is open: a run ended from
    outside (cancelled or failed through the API, its node lost). A run that never started
    its current attempt has nothing open, and nothing changes."""
    attempt_ended(session, run.id, run.attempt, at, outcome)


def decayed_usage(session: Session, cluster: Cluster, now: datetime) -> dict[str, float]:
    """Each team's slot-seconds on ``cluster``, decayed to ``now`` with the cluster's
    half-life (``fair_share_half_life_hours``): ended attempts from ``TeamUsage``, plus the
    attempts still open, integrated up to ``now``. Formula: docs/scheduling.md."""
    half_life = cluster.fair_share_half_life_hours * 3600.0
    usage: dict[str, float] = defaultdict(float)
    stored = session.execute(
        select(TeamUsage.team, TeamUsage.slot_seconds, TeamUsage.as_of).where(
            col(TeamUsage.cluster) == cluster.name
        )
    )
    for team, slot_seconds, as_of in stored:
        usage[team] += slot_seconds * decay(_seconds(as_of, now), half_life)
    running = session.execute(
        select(RunAttempt.team, RunAttempt.started_at).where(
            col(RunAttempt.cluster) == cluster.name, col(RunAttempt.ended_at).is_(None)
        )
    )
    for team, started in running:
        usage[team] += decayed_interval(_seconds(started, now), 0.0, half_life)
    return dict(usage)


def half_life_seconds(session: Session, cluster: str) -> float:
    row = session.get(Cluster, cluster)
    hours = row.fair_share_half_life_hours if row is not None else DEFAULT_HALF_LIFE_HOURS
    return hours * 3600.0


def decay(seconds: float, half_life: float) -> float:
    """What a value is worth ``seconds`` later."""
    return 2.0 ** (-seconds / half_life)


def decayed_interval(start_age: float, end_age: float, half_life: float) -> float:
    """One slot used from ``start_age`` to ``end_age`` seconds before the time decayed to,
    decayed to that time: ``H/ln2 * (2^(-end_age/H) - 2^(-start_age/H))`` (0 when empty)."""
    if start_age <= end_age:
        return 0.0
    return half_life / math.log(2) * (decay(end_age, half_life) - decay(start_age, half_life))


def _fold(
    session: Session,
    cluster: str,
    team: str,
    started: datetime,
    ended: datetime,
    gpus: int,
    half_life: float,
) -> None:
    """Add the interval to the team's decayed usage, under the row's lock (PostgreSQL: two
    ingest consumers fold into one row in turn; SQLite writes one transaction at a time)."""
    session.execute(
        insert_ignoring(session, TeamUsage)
        .values(cluster=cluster, team=team, slot_seconds=0.0, gpu_seconds=0.0, as_of=ended)
        .on_conflict_do_nothing(index_elements=["cluster", "team"])
    )
    where = (col(TeamUsage.cluster) == cluster, col(TeamUsage.team) == team)
    slot_seconds, gpu_seconds, as_of = session.execute(
        select(TeamUsage.slot_seconds, TeamUsage.gpu_seconds, TeamUsage.as_of)
        .where(*where)
        .with_for_update()
    ).one()
    as_of = as_utc(as_of)
    assert as_of is not None
    # Decayed to the later of the two: the stored sum when this attempt ended after it, this
    # attempt when it ended before (reports of several nodes arrive in any order).
    target = max(as_of, ended)
    kept = decay((target - as_of).total_seconds(), half_life)
    added = decayed_interval(
        (target - started).total_seconds(), (target - ended).total_seconds(), half_life
    )
    session.execute(
        update(TeamUsage)
        .where(*where)
        .values(
            slot_seconds=slot_seconds * kept + added,
            gpu_seconds=gpu_seconds * kept + added * gpus,
            as_of=target,
        )
    )


def _seconds(since: datetime, until: datetime) -> float:
    start, end = as_utc(since), as_utc(until)
    assert start is not None and end is not None
    return (end - start).total_seconds()
