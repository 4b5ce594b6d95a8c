"""Marking a run preempted, as the leading scheduler decides it (``scheduler.policy``).

Only the record here: the caller commits, then sets the attempt's Redis mark
(``protocol.control.request_preemption``) for its worker, which stops the run with the
cluster's grace period and reports it requeued; the ingest then puts it back in its queue
(``store.lifecycle.requeue_preempted``). Marked before the commit, a worker could report a
requeue the database does not yet expect, and the ingest would refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, update

from runyard.status import RunStatus
from store.lifecycle import forget
from store.models import Run, utcnow

# A run a worker is executing, not yet ending or being ended otherwise: what may be
# preempted. (Finalizing: its script has ended; CancelRequested: a cancel wins;
# NotResponding: nobody would hear the request.)
PREEMPTIBLE_STATES = (RunStatus.PREPARING, RunStatus.STARTING, RunStatus.RUNNING)


@dataclass(frozen=True)
class Requested:
    """A preemption recorded: the caller marks this attempt in Redis once committed."""

    run_id: str
    attempt: int
    reason: str


def request_preemption(
    session: Session, run_id: str, by: str, reason: str, at: datetime | None = None
) -> Requested | None:
    """Record that ``run_id`` is preempted ``by`` (a team, or a run) for ``reason``:
    conditional on the run being executed by a worker, preemptible, and not already being
    preempted, so a run that ended, or was cancelled, meanwhile is left alone (None is
    returned)."""
    marked = session.execute(
        update(Run)
        .where(
            Run.id == run_id,
            col(Run.status).in_(PREEMPTIBLE_STATES),
            col(Run.dispatched_at).is_not(None),
            col(Run.preempt_requested_at).is_(None),
            col(Run.preemptible).is_(True),  # its submitter opted out: never, whoever asks
        )
        .values(preempt_requested_at=at or utcnow(), preempted_by=by, preemption_reason=reason)
        .returning(Run.attempt)
        .execution_options(synchronize_session=False)
    ).first()
    forget(session, [run_id])
    if marked is None:
        return None
    return Requested(run_id=run_id, attempt=int(marked[0]), reason=reason)
