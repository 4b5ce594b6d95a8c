"""State transitions of a run, checked against ``runyard.status.TRANSITIONS``.

Several processes move runs (the API cancels, the ingest applies what workers report, the
watchdog fails silent runs), so each move is a conditional UPDATE on the status it was
decided from; losing that race re-reads the row and decides again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, null
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, col, select, update

from runyard.errors import IllegalTransition, RunFinished, RunNotFound
from runyard.status import ACTIVE, REENTRANT, TIMESTAMP_FIELD, RunStatus
from store.models import Run, utcnow

_RETRIES = 5

# Rows per statement of a bulk write. The run counters' PostgreSQL trigger (migration 0012)
# runs once per statement and updates one counter row; thousands of single-row statements
# in one transaction make PostgreSQL walk past every earlier version of that row, a cost
# quadratic in their number. 500 rows stay well under both databases' bound-parameter limits.
ROWS_PER_STATEMENT = 500


def chunks(items: Sequence[Any], size: int = ROWS_PER_STATEMENT) -> Iterator[Sequence[Any]]:
    """``items`` a statement's worth at a time."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def ended(new: RunStatus) -> dict[str, Any]:
    """What a run's end clears: a preemption still pending (the run ended first, so nobody
    is stopping it; its record keeps who asked and why)."""
    return {"preempt_requested_at": None} if new.is_terminal else {}


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
        changes: dict[str, Any] = {"status": new, **ended(new), **values}
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


def transition_many(
    session: Session,
    run_ids: Iterable[str],
    new: RunStatus,
    *,
    at: datetime | None = None,
    only_from: Collection[RunStatus] | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    **values: Any,
) -> list[str]:
    """Move many runs to ``new`` at once: one conditional UPDATE per ``ROWS_PER_STATEMENT``
    runs, never one per run (see ``ROWS_PER_STATEMENT``). The rules are ``transition``'s: a
    run moves only from a status that may become ``new`` (and, with ``only_from``, only
    from those: the statuses the caller decided from), and its time of first getting there
    is stamped. A run that changed meanwhile, or fails ``where``, is left as it is. Returns
    the ids moved; the caller decides again for the others, as ``transition`` re-reads."""
    at = at or utcnow()
    allowed = {s for s in RunStatus if s.can_become(new)}
    if only_from is not None:
        allowed &= set(only_from)
    ids = list(dict.fromkeys(run_ids))
    if not allowed or not ids:
        return []
    stamp = TIMESTAMP_FIELD[new]
    column = getattr(Run, stamp)
    changes: dict[str, Any] = {
        "status": new,
        stamp: at if new in REENTRANT else func.coalesce(column, at),
        **ended(new),
        **values,
    }
    moved: list[str] = []
    for chunk in chunks(ids):
        result = session.execute(
            update(Run)
            .where(col(Run.id).in_(chunk), col(Run.status).in_(allowed), *where)
            .values(**changes)
            .returning(Run.id)
            .execution_options(synchronize_session=False)
        )
        moved += result.scalars().all()
    forget(session, moved)
    return moved


def forget(session: Session, run_ids: Iterable[str]) -> None:
    """Runs this session has loaded are read again on next use: a bulk UPDATE changed them
    behind the ORM's back (only those in the session are looked at, never all of them)."""
    for run_id in run_ids:
        loaded = session.identity_map.get(identity_key(Run, run_id))
        if loaded is not None:
            session.expire(loaded)


# What a requeue clears: what the lost attempt recorded of its node goes with it, the worker
# and the environment it ran with (the next attempt, perhaps on another node, reports its own).
# A preemption asked of it is over (the attempt is); the next attempt's was not preempted,
# unless the requeue is a preemption's (``requeue_preempted``).
REQUEUED = {
    "dispatched_at": None,
    "worker_id": None,
    "environment_used": null(),  # SQL NULL, as a run that never reported one has
    "preempt_requested_at": None,
    "previous_attempt_preempted": False,
}

# Where a preempted attempt may be reported from: on a node (its worker stopped it), or
# NotResponding (its worker was silent a while, then reported).
PREEMPTED_FROM = frozenset(
    {RunStatus.PREPARING, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.NOT_RESPONDING}
)


def requeue(session: Session, run_id: str) -> Run:
    """Send a run whose node was lost back to its queue for another attempt."""
    return transition(session, run_id, RunStatus.QUEUED, **REQUEUED)


def requeue_preempted(session: Session, run_id: str, at: datetime | None = None) -> Run | None:
    """Send a run its worker stopped as preempted back to its queue: the same run, waiting
    for its next attempt, which finds this one's outputs and checkpoints. Only while the
    preemption is still asked (``store.preemption``) and the run is on its node; else None
    and nothing changes. Who preempted it and why stay on the record."""
    run = session.get(Run, run_id, populate_existing=True)
    if run is None or run.preempt_requested_at is None or run.status not in PREEMPTED_FROM:
        return None
    return transition(
        session,
        run_id,
        RunStatus.QUEUED,
        at=at,
        **{**REQUEUED, "previous_attempt_preempted": True},
        preemptions=Run.preemptions + 1,
    )


def end_children(session: Session, parent_id: str, parent_status: RunStatus) -> None:
    """Children still active when their parent ends take its ending (they lived in its
    process). A completed parent completes them. A submitted child (``submit_child``) has a
    process of its own, which reports its end: it is left alone here (a cancel of its
    parent cancels it through its worker, ``store.runs.cancel``)."""
    end_children_of(session, [parent_id], parent_status)


def end_children_of(session: Session, parent_ids: Iterable[str], parent_status: RunStatus) -> None:
    """``end_children`` of many parents that ended alike, a generation at a time: one query
    and one UPDATE per ``ROWS_PER_STATEMENT`` parents or children, however many there are
    (a job array's or a sweep's thousands of children end in a handful of statements)."""
    reason = None if parent_status == RunStatus.COMPLETED else f"parent {parent_status.value}"
    values = {"failure_reason": reason} if reason else {}
    parents = list(parent_ids)
    while parents:
        children: list[str] = []
        for chunk in chunks(parents):
            children += session.exec(
                select(Run.id).where(
                    col(Run.parent_run_id).in_(chunk),
                    col(Run.status).in_(ACTIVE),
                    col(Run.snapshot_digest).is_(None),
                )
            ).all()
        # One that changed meanwhile keeps its own end, and its children are left to it.
        parents = transition_many(session, children, parent_status, only_from=ACTIVE, **values)
