"""The audit log: who submitted, cancelled, or changed clusters and tokens, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from store.models import AuditEvent, CancelResult
from store.tokens import Actor


def record(session: Session, actor: Actor, action: str, target: str, **detail: Any) -> None:
    """Added to the caller's transaction, so an action and its record commit together."""
    session.add(
        AuditEvent(
            actor=actor.name, token_id=actor.token_id, action=action, target=target, detail=detail
        )
    )


def record_cancels(session: Session, actor: Actor, results: list[CancelResult]) -> None:
    """A ``run.cancel`` record for each run a bulk cancel ended (none for those it refused)."""
    for result in results:
        if result.error is None:
            record(session, actor, "run.cancel", result.id)


def list_events(
    session: Session,
    *,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[AuditEvent], int]:
    query = select(AuditEvent)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if action:
        query = query.where(AuditEvent.action == action)
    if since:
        query = query.where(col(AuditEvent.at) >= since)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(AuditEvent.id).desc()).offset(offset).limit(limit))
    return list(rows), total
