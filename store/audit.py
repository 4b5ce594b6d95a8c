"""The audit log: who submitted, cancelled, or changed clusters and tokens, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, col

from store.models import AuditEvent, CancelResult, utcnow
from store.paging import Key, Section, read_page
from store.tokens import Actor


def record(session: Session, actor: Actor, action: str, target: str, **detail: Any) -> None:
    """Added to the caller's transaction, so an action and its record commit together."""
    session.add(
        AuditEvent(
            actor=actor.name, token_id=actor.token_id, action=action, target=target, detail=detail
        )
    )


def record_cancels(session: Session, actor: Actor, results: list[CancelResult]) -> None:
    """A ``run.cancel`` record for each run a bulk cancel ended (none for those it refused),
    all in one executemany: a whole queue's cancel records thousands (no trigger on the
    audit log, so the driver's batches serve; built as ORM objects they took seconds)."""
    at = utcnow()
    rows = [
        {
            "at": at,
            "actor": actor.name,
            "token_id": actor.token_id,
            "action": "run.cancel",
            "target": result.id,
            "detail": {},
        }
        for result in results
        if result.error is None
    ]
    if rows:
        session.execute(insert(AuditEvent), rows)


def list_events(
    session: Session,
    *,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    limit: int,
    offset: int = 0,
    cursor: str | None = None,
) -> tuple[list[AuditEvent], str | None]:
    """A page of the audit log, newest first, and the cursor of the next page. No total:
    the log grows with everything done, and counting it would read all of it."""
    where: list[Any] = []
    if actor:
        where.append(AuditEvent.actor == actor)
    if action:
        where.append(AuditEvent.action == action)
    if since:
        where.append(col(AuditEvent.at) >= since)
    section = Section(where, (Key(col(AuditEvent.id), int, descending=True),), ("id",))
    page = read_page(
        session, "audit", AuditEvent, [section], limit=limit, cursor=cursor, offset=offset
    )
    return [row for _, row in page.rows], page.next_cursor
