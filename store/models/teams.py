"""Teams: who shares a cluster, what each is entitled to on it, and what each has used.

A team holds tokens (people, and the runs they start); every run is charged to one team.
On a cluster with quotas, admission is the team scheduler of ``scheduler.policy``: each
team's nominal quota is its own, idle capacity is lent to others within their borrowing
and the owner's lending limits, and capacity lent out is reclaimed by preemption. A
cluster without quotas admits exactly as before teams existed (priority, then submit time).
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import ConfigDict, field_validator
from sqlalchemy import Column, Float, Index, Text
from sqlmodel import Field, SQLModel

from store.models.names import creation_timestamp, optional_timestamp

TEAM_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
# What usage rows and metrics call the runs of no team (a token in none, on a cluster
# with quotas: they may only borrow idle capacity).
NO_TEAM = ""
# Fair share counts each slot a team holds now as this many seconds of past usage, so a
# burst spreads at once (docs/scheduling.md): the policy's and the figures' one value.
ALLOCATION_WEIGHT_SECONDS = 3600.0


def check_team_name(name: str) -> str:
    if not TEAM_NAME.match(name):
        raise ValueError(
            "team names are 2-32 characters: lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    return name


class Team(SQLModel, table=True):
    name: str = Field(primary_key=True, max_length=32)
    description: str = Field(default="", max_length=1000)
    created_at: datetime = creation_timestamp()


class TeamMember(SQLModel, table=True):
    """A token in a team. A token in several names one of them as its default: the team
    its runs are charged to when they name none."""

    __tablename__ = "team_member"

    team: str = Field(foreign_key="team.name", primary_key=True, max_length=32)
    token_id: str = Field(foreign_key="apitoken.id", primary_key=True, max_length=32, index=True)
    is_default: bool = False
    created_at: datetime = creation_timestamp()


class TeamQuota(SQLModel, table=True):
    """A team's share of one cluster. ``slots``/``gpus``: its nominal quota (always its
    own: borrowed capacity is reclaimed for it). ``borrowing_*``: how much idle capacity
    of others it may use beyond its quota; ``lending_*``: how much of its own idle quota
    others may use. None: no limit (GPUs: none counted where nodes have none)."""

    __tablename__ = "team_quota"

    cluster: str = Field(foreign_key="cluster.name", primary_key=True, max_length=32)
    team: str = Field(foreign_key="team.name", primary_key=True, max_length=32, index=True)
    slots: int = Field(default=0, ge=0)
    gpus: int | None = Field(default=None, ge=0)
    borrowing_slots: int | None = Field(default=None, ge=0)
    borrowing_gpus: int | None = Field(default=None, ge=0)
    lending_slots: int | None = Field(default=None, ge=0)
    lending_gpus: int | None = Field(default=None, ge=0)
    updated_at: datetime = creation_timestamp()


class TeamUsage(SQLModel, table=True):
    """A team's recent usage of a cluster, decayed (half-life: the cluster's
    ``fair_share_half_life_hours``) to ``as_of``: ended attempts only; running ones are
    added when read (``store.attempts.decayed_usage``). One row, updated as attempts
    end, so fair share never sums a cluster's history."""

    __tablename__ = "team_usage"

    cluster: str = Field(primary_key=True, max_length=32)
    team: str = Field(primary_key=True, max_length=32)
    slot_seconds: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    gpu_seconds: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    as_of: datetime = creation_timestamp()


class RunAttempt(SQLModel, table=True):
    """One hand-over of a run to a worker, from the slot being taken to its release: what
    usage accounting sums (a requeued run has one row per attempt)."""

    __tablename__ = "run_attempt"
    __table_args__ = (
        Index("ix_run_attempt_started", "started_at"),
        Index("ix_run_attempt_open", "cluster", "ended_at"),
        # Preemptions per team (``/metrics``): a range of preempted attempts alone.
        Index("ix_run_attempt_outcome", "cluster", "outcome", "team"),
    )

    run_id: str = Field(foreign_key="run.id", primary_key=True, max_length=300)
    attempt: int = Field(primary_key=True)
    cluster: str = Field(max_length=32)
    team: str = Field(default=NO_TEAM, max_length=32)
    submitted_by: str | None = Field(default=None, max_length=64)
    gpus: int = 0
    started_at: datetime = creation_timestamp()
    ended_at: datetime | None = optional_timestamp()
    # completed, failed, canceled, preempted, lost (its node went silent)
    outcome: str | None = Field(default=None, max_length=16)
    preempted_by: str | None = Field(default=None, sa_column=Column(Text))


# --- API shapes ------------------------------------------------------------------------------


class TeamCreate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    name: str
    description: str = Field(default="", max_length=1000)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_team_name(value)


class QuotaSettings(SQLModel):
    """What an admin sets for a team on a cluster (``PUT /teams/{t}/quotas/{cluster}``)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    slots: int = Field(default=0, ge=0, le=10_000, description="Nominal quota: slots")
    gpus: int | None = Field(default=None, ge=0, le=100_000, description="Nominal quota: GPUs")
    borrowing_slots: int | None = Field(
        default=None, ge=0, le=10_000, description="Idle slots of others it may use; null: any"
    )
    borrowing_gpus: int | None = Field(default=None, ge=0, le=100_000)
    lending_slots: int | None = Field(
        default=None, ge=0, le=10_000, description="Its idle slots others may use; null: all"
    )
    lending_gpus: int | None = Field(default=None, ge=0, le=100_000)


class TeamMembership(SQLModel):
    """``PUT /teams/{team}/members/{token}``: whether this team becomes the token's default
    (its runs that name no team are charged to it). Omitted: its first team is."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    default: bool | None = None


class QuotaPublic(QuotaSettings):
    cluster: str
    team: str


class TeamPublic(SQLModel):
    name: str
    description: str
    created_at: datetime
    members: list[str] = Field(default_factory=list, description="Token names")
    quotas: list[QuotaPublic] = Field(default_factory=list)


class TeamsPublic(SQLModel):
    data: list[TeamPublic]
    count: int


class QuotasPublic(SQLModel):
    """``GET /clusters/{cluster}/quotas``: every team's quota on one cluster, by team."""

    data: list[QuotaPublic]
    count: int
