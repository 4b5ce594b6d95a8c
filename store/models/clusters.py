"""Clusters: what an operator sets on one, and how the API shows it with its workers.

A cluster is a named queue with its own capacity (``nodes``), default executor and
environment, container policy and run budgets; workers serve one or more clusters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, field_validator
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from protocol.budgets import check_budgets
from protocol.environments import EXECUTORS, Executor, check_container, check_environment
from store.models.names import check_cluster_name, creation_timestamp
from store.models.runs import NEXT_CURSOR


class ClusterSettings(SQLModel):
    """What an operator sets on a cluster."""

    nodes: int = Field(default=1, ge=1, le=10_000, description="Max concurrent runs")
    executor: str = Field(default=Executor.LOCAL, description="Default executor: local or docker")
    environment: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON), description="Default environment"
    )
    cancel_grace_seconds: float = Field(default=10.0, ge=0, le=3600)
    description: str = Field(default="", max_length=1000)
    requeue_on_node_loss: bool = Field(
        default=False, description="Requeue a run whose node went silent instead of failing it"
    )
    max_attempts: int = Field(default=3, ge=1, le=100, description="With requeue: attempts")
    container: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON),
        description="Docker confinement (see ContainerPolicy); hardened defaults",
    )
    container_runs: bool = Field(
        default=False,
        description="A local cluster also takes runs that ask for Docker, and runs them in "
        "containers (its workers need a Docker engine); otherwise they are refused",
    )
    budgets: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON),
        description="What each run may put in (see RunBudgets); the rest defaults",
    )
    is_default: bool = Field(
        default=False,
        description="Where runs without a compute target go (at most one cluster)",
    )
    # Teams (scheduler.policy): used only once the cluster has team quotas.
    priority_preemption: bool = Field(
        default=False,
        description="A waiting run may preempt a lower-priority run of its own team, or of a "
        "team over its quota",
    )
    preemption_min_runtime_seconds: float = Field(
        default=60.0, ge=0, le=7 * 86400, description="A run is never preempted before this"
    )
    fair_share_half_life_hours: float = Field(
        default=168.0, gt=0, le=100 * 365 * 24, description="Past usage halves every this long"
    )
    priority_aging_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=365 * 86400,
        description="A waiting run gains one priority step per this long waited",
    )

    @field_validator("container")
    @classmethod
    def _valid_container(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_container(value)

    @field_validator("budgets")
    @classmethod
    def _valid_budgets(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_budgets(value)

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str) -> str:
        if value not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}")
        return value

    @field_validator("environment")
    @classmethod
    def _valid_environment(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_environment(value)


class ClusterCreate(ClusterSettings):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    name: str

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_cluster_name(value)


class ClusterUpdate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    nodes: int | None = Field(default=None, ge=1, le=10_000)
    executor: str | None = None
    environment: dict[str, Any] | None = None
    cancel_grace_seconds: float | None = Field(default=None, ge=0, le=3600)
    description: str | None = Field(default=None, max_length=1000)
    requeue_on_node_loss: bool | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    container: dict[str, Any] | None = None
    container_runs: bool | None = None
    is_default: bool | None = None
    budgets: dict[str, Any] | None = None
    priority_preemption: bool | None = None
    preemption_min_runtime_seconds: float | None = Field(default=None, ge=0, le=7 * 86400)
    fair_share_half_life_hours: float | None = Field(default=None, gt=0, le=100 * 365 * 24)
    priority_aging_seconds: float | None = Field(default=None, gt=0, le=365 * 86400)

    @field_validator("budgets")
    @classmethod
    def _valid_budgets(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_budgets(value)

    @field_validator("container")
    @classmethod
    def _valid_container(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_container(value)

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str | None) -> str | None:
        if value is not None and value not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}")
        return value

    @field_validator("environment")
    @classmethod
    def _valid_environment(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_environment(value)


class Cluster(ClusterSettings, table=True):
    name: str = Field(primary_key=True, max_length=32)
    created_at: datetime = creation_timestamp()
    updated_at: datetime = creation_timestamp()


class WorkerPublic(SQLModel):
    id: str
    hostname: str
    clusters: list[str]
    slots: int
    busy: int
    runs: list[str]
    draining: bool = False
    last_heartbeat: datetime
    gpus: int = 0


class TeamUsagePublic(SQLModel):
    """A team's standing on a cluster with quotas (``store.team_status``): its nominal
    quota, what it uses now, beyond its quota (borrowed) and of its quota by others (lent),
    its waiting runs, and its recent usage against its entitlement."""

    team: str = Field(description='Team name; "" for runs of no team')
    quota_slots: int = 0
    quota_gpus: int = 0
    used_slots: int = 0
    used_gpus: int = 0
    borrowed_slots: int = 0
    lent_slots: int = 0
    waiting: int = 0
    usage_slot_seconds: float = Field(default=0.0, description="Decayed (fair-share half-life)")
    fair_share_ratio: float | None = Field(
        default=None,
        description="Share of recent usage / share of nominal quota (1: exactly its share); "
        "null for a team with no quota",
    )
    preemptions: int = Field(default=0, description="Its runs' preemptions (requeues)")


class ClusterPublic(ClusterSettings):
    name: str
    created_at: datetime
    updated_at: datetime
    workers: list[WorkerPublic] = []
    slots: int = 0
    capacity: int = 0
    queued: int = 0
    active: int = 0
    teams: list[TeamUsagePublic] = Field(
        default_factory=list, description="Per team, on a cluster with quotas"
    )


class ClustersPublic(SQLModel):
    data: list[ClusterPublic]
    count: int
    next_cursor: str | None = Field(default=None, description=NEXT_CURSOR)


class WorkersPublic(SQLModel):
    data: list[WorkerPublic]
    count: int
    next_cursor: str | None = Field(default=None, description=NEXT_CURSOR)
