"""The audit log, newest first. Admins only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import ALLOW
from api.deps import SessionDep
from store import audit
from store.models import AuditEventsPublic

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", operation_id="list_audit_events", dependencies=[ALLOW.admin])
def list_audit_events(
    session: SessionDep,
    actor: str | None = None,
    action: Annotated[str | None, Query(description="e.g. run.submit, token.revoke")] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AuditEventsPublic:
    rows, total = audit.list_events(
        session, actor=actor, action=action, since=since, limit=limit, offset=offset
    )
    return AuditEventsPublic(data=rows, count=total)
