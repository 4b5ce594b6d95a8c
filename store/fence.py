"""The database side of scheduler leadership: a transaction is the leader's only if it
can raise the fence row to the leader's token (``store.models.SchedulerFence``).

The lease in Redis says who should lead; it cannot stop a leader that was paused (SIGSTOP,
a long GC, a VM freeze) past its lease from acting when it wakes. The fence can: the new
leader's first transaction records a higher token, and the old leader's next
``hold`` finds the row above its own and its transaction rolls back. The fence update is
the transaction's first write, so it also takes the row's lock: two leaders' transactions
are serialized, never interleaved.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlmodel import Session, col, select, update

from store.db import insert_ignoring
from store.models import SchedulerFence

LEADER = "leader"


def hold(
    session: Session, token: int, name: str = LEADER, stalled_after_ms: int | None = None
) -> bool:
    """Raise the fence to ``token`` inside the caller's transaction; False when a later
    leader's token is already recorded (the caller must roll back and step down). Never
    commits: the caller's unit of work commits with the fence held. On PostgreSQL,
    ``stalled_after_ms`` ends the session should the transaction then sit idle that long (a
    paused leader), releasing the fence row for the next leader; its work rolls back."""
    if stalled_after_ms and session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(f"SET LOCAL idle_in_transaction_session_timeout = {int(stalled_after_ms)}")
        )
    if _raise(session, token, name):
        return True
    # No row yet (a fresh database): insert it. Another leader may insert at the same time;
    # whichever row stands, the conditional update decides.
    session.execute(
        insert_ignoring(session, SchedulerFence)
        .values(name=name, token=token)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return _raise(session, token, name)


def _raise(session: Session, token: int, name: str) -> bool:
    result = session.execute(
        update(SchedulerFence)
        .where(col(SchedulerFence.name) == name, col(SchedulerFence.token) <= token)
        .values(token=token)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def current(session: Session, name: str = LEADER) -> int | None:
    """The highest token that has written (None before any leader has)."""
    return session.exec(select(SchedulerFence.token).where(SchedulerFence.name == name)).first()
