"""Preemption as the database records it: the leading scheduler asks an active run to give
its slot back, in the same transaction as the admission that decided it; its worker is
told through Redis only after that commits (``scheduler.service.dispatch_cluster``)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, update

from runyard.status import ACTIVE
from store.models import Run, utcnow


def request_preemption(
    session: Session, run_id: str, by: str, reason: str, at: datetime | None = None
) -> bool:
    """Mark ``run_id`` as asked to stop for ``by`` (the run it makes room for), with the
    reason its record shows. Conditional on the run being active and not already asked: a
    run that ended, or that another decision already preempts, is left as it is (False)."""
    marked = session.execute(
        update(Run)
        .where(
            col(Run.id) == run_id,
            col(Run.status).in_(ACTIVE),
            col(Run.preempt_requested_at).is_(None),
        )
        .values(preempt_requested_at=at or utcnow(), preempted_by=by, preemption_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return bool(marked.rowcount)  # type: ignore[attr-defined]
