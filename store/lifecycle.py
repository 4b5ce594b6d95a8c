"""State transitions of a run, checked against ``runyard.status.TRANSITIONS``.

Several processes move runs (the API cancels, the ingest applies what workers report, the
watchdog fails silent runs), so each move is a conditional UPDATE on the status it was
decided from; losing that race re-reads the row and decides again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import null
from sqlmodel import Session, col, select, update

from runyard.errors import IllegalTransition, RunFinished, RunNotFound
from runyard.status import ACTIVE, REENTRANT, TIMESTAMP_FIELD, RunStatus
from store.models import Run, utcnow

_RETRIES = 5


def transition(
    session: Session,
    run_id: str,
    new: RunStatus,
    *,
    at: datetime | None = None,
    **values: Any,
) -> Run:
    """Move a run to ``new`` and stamp the time it first got there.

    Reporting the status a run already has is a no-op (replays are harmless).
    """
    at = at or utcnow()
    for _ in range(_RETRIES):
        run = session.get(Run, run_id, populate_existing=True)
        if run is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        current = run.status
        if current == new:
            return run
        if not current.can_become(new):
            error = RunFinished if current.is_terminal else IllegalTransition
            raise error(f"run {run_id} is {current.value}; it cannot become {new.value}")
        changes: dict[str, Any] = {"status": new, **values}
        stamp = TIMESTAMP_FIELD[new]
        if getattr(run, stamp) is None or new in REENTRANT:
            changes[stamp] = at
        result = session.execute(
            update(Run).where(Run.id == run_id, Run.status == current).values(**changes)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            session.flush()
            refreshed = session.get(Run, run_id, populate_existing=True)
            assert refreshed is not None
            return refreshed
    raise IllegalTransition(f"run {run_id} kept changing; try again")


def requeue(session: Session, run_id: str) -> Run:
    """Send a run whose node was lost back to its queue for another attempt. What the lost
    attempt recorded of its node goes with it: the worker, and the environment it ran with
    (the next attempt, perhaps on another node, reports its own)."""
    return transition(
        session,
        run_id,
        RunStatus.QUEUED,
        dispatched_at=None,
        worker_id=None,
        environment_used=null(),  # SQL NULL, as a run that never reported one has
    )


def end_children(session: Session, parent_id: str, parent_status: RunStatus) -> None:
    """Children still active when their parent ends take its ending (they lived in its
    process). A completed parent completes them. A submitted child (``submit_child``) has a
    process of its own, which reports its end: it is left alone here (a cancel of its
    parent cancels it through its worker, ``store.runs.cancel``)."""
    children = session.exec(
        select(Run.id).where(
            Run.parent_run_id == parent_id,
            col(Run.status).in_(ACTIVE),
            col(Run.snapshot_digest).is_(None),
        )
    )
    for child_id in list(children):
        reason = None if parent_status == RunStatus.COMPLETED else f"parent {parent_status.value}"
        values = {"failure_reason": reason} if reason else {}
        try:
            transition(session, child_id, parent_status, **values)
        except IllegalTransition:
            continue
        end_children(session, child_id, parent_status)
