"""The audit log, newest first. Admins only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import ALLOW
from api.deps import SessionDep
from api.paging import DEFAULT_PAGE, Cursor, Limit, Offset
from store import audit
from store.models import AuditEventsPublic

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", operation_id="list_audit_events", dependencies=[ALLOW.admin])
def list_audit_events(
    session: SessionDep,
    actor: str | None = None,
    action: Annotated[str | None, Query(description="e.g. run.submit, token.revoke")] = None,
    since: datetime | None = None,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    offset: Offset = 0,
) -> AuditEventsPublic:
    """A page of the audit log, newest first (``count`` is null: the log is history)."""
    rows, next_cursor = audit.list_events(
        session,
        actor=actor,
        action=action,
        since=since,
        limit=limit,
        offset=offset,
        cursor=cursor,
    )
    return AuditEventsPublic(data=rows, next_cursor=next_cursor)
