"""Preemption as the database records it: the leading scheduler asks an active run to give
its slot back, in the same transaction as the admission that decided it; its worker is
told through Redis only after that commits (``scheduler.service.dispatch_cluster``)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, update

from runyard.status import RunStatus
from store.models import Run, utcnow

# A run a worker is executing, not yet ending or being ended otherwise: what may be
# preempted. (Finalizing: its script has ended; CancelRequested: a cancel wins;
# NotResponding: nobody would hear the request.)
PREEMPTIBLE_STATES = (RunStatus.PREPARING, RunStatus.STARTING, RunStatus.RUNNING)


def request_preemption(
    session: Session, run_id: str, by: str, reason: str, at: datetime | None = None
) -> bool:
    """Mark ``run_id`` as asked to stop for ``by`` (the run it makes room for), with the
    reason its record shows. Conditional on a worker executing the run
    (``PREEMPTIBLE_STATES``), the run being preemptible and not already asked: any other is
    left as it is (False)."""
    marked = session.execute(
        update(Run)
        .where(
            col(Run.id) == run_id,
            col(Run.status).in_(PREEMPTIBLE_STATES),
            col(Run.preemptible).is_(True),
            col(Run.preempt_requested_at).is_(None),
        )
        .values(preempt_requested_at=at or utcnow(), preempted_by=by, preemption_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return bool(marked.rowcount)  # type: ignore[attr-defined]
