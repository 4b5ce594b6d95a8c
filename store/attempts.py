"""Run attempts and team usage: each hand-over of a run to a worker, from the slot being
taken to its release, and each team's recent usage of a cluster decayed for fair share.

Usage accounting (``store.usage``) sums the attempts; admission (``scheduler.admission``)
reads the decayed usage, which is kept up to date as attempts end, so neither sums a
cluster's history on the hot path.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from store.models import Cluster, Run

# Outcomes of an attempt (``RunAttempt.outcome``).
COMPLETED, FAILED, CANCELED, PREEMPTED, LOST = (
    "completed",
    "failed",
    "canceled",
    "preempted",
    "lost",
)


def attempt_started(session: Session, run: Run, attempt: int, at: datetime, gpus: int = 0) -> None:
    """Record that ``attempt`` of ``run`` holds a slot since ``at`` (its first report from
    a worker). Idempotent: a replayed report changes nothing."""
    raise NotImplementedError


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
    raise NotImplementedError


def decayed_usage(session: Session, cluster: Cluster, now: datetime) -> dict[str, float]:
    """Each team's slot-seconds on ``cluster``, decayed to ``now`` with the cluster's
    half-life (``fair_share_half_life_hours``): ended attempts from ``TeamUsage``, plus the
    attempts still open, integrated up to ``now``. Formula: docs/scheduling.md."""
    raise NotImplementedError
