"""API tokens and Studio sessions, the roles they carry, and how the API shows them."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ConfigDict, field_validator, model_validator
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from protocol.roles import Role, TokenRole
from store.models.names import (
    check_cluster_name,
    check_token_name,
    creation_timestamp,
    optional_timestamp,
    utcnow,
)


class ApiToken(SQLModel, table=True):
    """A bearer token, or a Studio session made from one. Only the SHA-256 of the secret is
    kept: the secret is shown once, at creation."""

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(index=True, max_length=64)
    role: str = Field(max_length=16)
    clusters: list[str] = Field(default_factory=list, sa_column=Column(JSON))  # workers only
    secret_hash: str = Field(unique=True, max_length=64)
    kind: str = Field(default="token", max_length=16)  # "token" or "session"
    parent_id: str | None = Field(default=None, max_length=32, index=True)  # a session's token
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = creation_timestamp()
    expires_at: datetime | None = optional_timestamp()
    revoked_at: datetime | None = optional_timestamp()
    last_used_at: datetime | None = optional_timestamp()


class TokenCreate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    name: str
    role: TokenRole
    clusters: list[str] = Field(default_factory=list, max_length=100)
    expires_at: datetime | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_token_name(value)

    @field_validator("clusters")
    @classmethod
    def _valid_clusters(cls, value: list[str]) -> list[str]:
        return sorted({c if c == "*" else check_cluster_name(c) for c in value})

    @model_validator(mode="after")
    def _clusters_only_for_workers(self) -> TokenCreate:
        if self.role == Role.WORKER and not self.clusters:
            raise ValueError("a worker token needs the clusters it serves (or '*' for all)")
        if self.role != Role.WORKER and self.clusters:
            raise ValueError("only worker tokens are bound to clusters")
        if self.expires_at is not None:
            when = self.expires_at
            if when.tzinfo is None:
                self.expires_at = when = when.replace(tzinfo=UTC)
            if when <= utcnow():
                raise ValueError("expires_at is in the past")
        return self


class TokenPublic(SQLModel):
    id: str
    name: str
    role: str
    clusters: list[str]
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    token: str  # the secret: shown once, never stored


class TokensPublic(SQLModel):
    data: list[TokenPublic]
    count: int
    next_cursor: str | None = None  # of the next page (store.paging); None at the end
