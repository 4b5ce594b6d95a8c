"""The audit log: who did what, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from store.models.names import creation_timestamp


class AuditEvent(SQLModel, table=True):
    """Who did what, when: submissions, cancels, cluster and token changes, sign-ins."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = creation_timestamp(index=True)
    actor: str = Field(max_length=64, index=True)
    token_id: str | None = Field(default=None, max_length=32)
    action: str = Field(max_length=32, index=True)
    target: str = Field(default="", max_length=300)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class AuditEventsPublic(SQLModel):
    """A page of the audit log, newest first."""

    data: list[AuditEvent]
    count: int | None = Field(
        default=None, description="Always null: a total would read the whole log"
    )
    next_cursor: str | None = Field(
        default=None, description="Send as cursor= for the next page; null on the last"
    )
