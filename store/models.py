"""Database tables and the API shapes built on them (one model family per entity)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import ConfigDict, field_validator, model_validator
from sqlalchemy import JSON, BigInteger, Column, DateTime, Double, Index, Text, UniqueConstraint
from sqlalchemy import Enum as SAEnum
from sqlmodel import Field, SQLModel

from protocol.budgets import check_budgets
from protocol.environments import EXECUTORS, check_container, check_environment
from protocol.limits import (
    MAX_DISPLAY_NAME,
    MAX_PRIORITY,
    MIN_PRIORITY,
    TAG_KEY_LENGTH,
    TAG_VALUE_LENGTH,
)
from protocol.roles import Role, TokenRole
from runyard.status import RunStatus

CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kwargs: Any) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), **kwargs))


def check_cluster_name(name: str) -> str:
    if not CLUSTER_NAME.match(name):
        raise ValueError(
            "cluster names are 2-32 characters: lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    return name


def check_experiment_name(name: str) -> str:
    if not EXPERIMENT_NAME.match(name):
        raise ValueError(
            "experiment names are 1-255 characters: letters, digits, '_', '-' and '.', "
            "starting with a letter or digit"
        )
    return name


# --- clusters -------------------------------------------------------------------------------


class ClusterSettings(SQLModel):
    """What an operator sets on a cluster."""

    nodes: int = Field(default=1, ge=1, le=10_000, description="Max concurrent runs")
    executor: str = Field(default="local", description="Default executor: local or docker")
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
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class WorkerPublic(SQLModel):
    id: str
    hostname: str
    clusters: list[str]
    slots: int
    busy: int
    runs: list[str]
    draining: bool = False
    last_heartbeat: datetime


class ClusterPublic(ClusterSettings):
    name: str
    created_at: datetime
    updated_at: datetime
    workers: list[WorkerPublic] = []
    slots: int = 0
    capacity: int = 0
    queued: int = 0
    active: int = 0


class ClustersPublic(SQLModel):
    data: list[ClusterPublic]
    count: int


# --- experiments ----------------------------------------------------------------------------


class Experiment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=255)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ExperimentPublic(SQLModel):
    name: str
    created_at: datetime
    run_count: int = 0


class ExperimentsPublic(SQLModel):
    data: list[ExperimentPublic]
    count: int


# --- runs -----------------------------------------------------------------------------------


class RunSpec(SQLModel):
    """What a client submits (the JSON part of ``POST /api/v1/runs``)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    experiment: str = Field(description="Experiment name; created on first use")
    cluster: str | None = Field(
        default=None,
        description="Cluster name; none (or Azure's 'local', unless a cluster has that "
        "name) means the default cluster",
    )
    script: str = Field(min_length=1, max_length=1024)
    arguments: list[str] = Field(default_factory=list, max_length=1000)
    environment: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(
        default=0, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="Higher runs first"
    )
    snapshot_digest: str | None = Field(
        default=None, description="sha256 of an already uploaded snapshot, when none is sent"
    )
    display_name: str | None = Field(default=None, max_length=MAX_DISPLAY_NAME)
    parent_run_id: str | None = None
    tags: dict[str, str | None] = Field(
        default_factory=dict, max_length=100, description="Tags the run has from the start"
    )
    max_run_duration_seconds: float | None = Field(
        default=None, gt=0, description="Ended (Failed) when it runs longer than this"
    )

    @field_validator("experiment")
    @classmethod
    def _valid_experiment(cls, value: str) -> str:
        return check_experiment_name(value)

    @field_validator("cluster")
    @classmethod
    def _valid_cluster(cls, value: str | None) -> str | None:
        return None if value is None else check_cluster_name(value)

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        for key, text in value.items():
            if not key or len(key) > TAG_KEY_LENGTH:
                raise ValueError(f"tag keys are 1-{TAG_KEY_LENGTH} characters")
            if text is not None and len(text) > TAG_VALUE_LENGTH:
                raise ValueError(f"tag {key!r}: value over {TAG_VALUE_LENGTH} characters")
        return value

    @field_validator("environment")
    @classmethod
    def _valid_environment(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_environment(value)

    @field_validator("arguments")
    @classmethod
    def _printable_arguments(cls, value: list[str]) -> list[str]:
        if any("\x00" in a for a in value):
            raise ValueError("arguments cannot contain NUL characters")
        return value

    @field_validator("script")
    @classmethod
    def _relative_script(cls, value: str) -> str:
        parts = value.replace("\\", "/").split("/")
        if value.startswith("/") or ".." in parts or "\x00" in value:
            raise ValueError("script must be a path inside the snapshot")
        return value


class RunBase(SQLModel):
    cluster: str | None = Field(default=None, foreign_key="cluster.name", index=True)
    status: RunStatus = Field(
        default=RunStatus.NOT_STARTED,
        sa_column=Column(
            SAEnum(
                RunStatus,
                native_enum=False,
                length=20,
                values_callable=lambda statuses: [s.value for s in statuses],
            ),
            nullable=False,
            index=True,
        ),
    )
    priority: int = 0
    script: str = ""
    arguments: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    environment: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    snapshot_digest: str | None = None
    display_name: str | None = None
    parent_run_id: str | None = Field(default=None, foreign_key="run.id", index=True)
    # The top of its tree (None for a top-level run): child runs are budgeted per tree.
    root_run_id: str | None = Field(default=None, max_length=300, index=True)
    submitted_by: str | None = None
    worker_id: str | None = None
    attempt: int = 0  # times handed to a worker (a requeued run starts again)
    max_run_duration_seconds: float | None = None  # ended (Failed) past this long running
    exit_code: int | None = None
    failure_reason: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    dispatched_at: datetime | None = _ts()
    # One timestamp per state reached (named by runyard.status.TIMESTAMP_FIELD).
    not_started_at: datetime | None = _ts()
    queued_at: datetime | None = _ts()
    preparing_at: datetime | None = _ts()
    starting_at: datetime | None = _ts()
    running_at: datetime | None = _ts()
    finalizing_at: datetime | None = _ts()
    cancel_requested_at: datetime | None = _ts()
    not_responding_at: datetime | None = _ts()
    completed_at: datetime | None = _ts()
    failed_at: datetime | None = _ts()
    canceled_at: datetime | None = _ts()


class Run(RunBase, table=True):
    id: str = Field(primary_key=True, max_length=300)
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    # Interactive runs: the token that started them. Its run token dies with it, since the
    # person holding the notebook is the one whose access was taken away.
    issued_by_token: str | None = Field(default=None, max_length=32)


class RunPublic(RunBase):
    id: str
    experiment: str
    position: int | None = None
    pending_reason: str | None = None
    ended_at: datetime | None = None


class RunsPublic(SQLModel):
    data: list[RunPublic]
    count: int


class CancelResult(SQLModel):
    id: str
    status: RunStatus | None = None
    error: str | None = None


class CancelResults(SQLModel):
    data: list[CancelResult]
    count: int


class BulkCancel(SQLModel):
    run_ids: list[str] = Field(min_length=1, max_length=1000)


# --- logs and files -------------------------------------------------------------------------


class RunLog(SQLModel, table=True):
    """A chunk of a run's combined stdout/stderr, numbered by the worker that read it."""

    __table_args__ = (UniqueConstraint("run_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    seq: int
    text: str = Field(sa_column=Column(Text, nullable=False))


class RunFile(SQLModel, table=True):
    run_id: str = Field(foreign_key="run.id", primary_key=True)
    name: str = Field(primary_key=True, max_length=1024)
    size: int
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class RunFilePublic(SQLModel):
    name: str
    size: int
    created_at: datetime


class RunFilesPublic(SQLModel):
    data: list[RunFilePublic]
    count: int


# --- tracking: metrics, tags, properties ------------------------------------------------------


class Metric(SQLModel, table=True):
    """One named series of a run, and how it was logged (which decides its shape)."""

    run_id: str = Field(foreign_key="run.id", primary_key=True)
    name: str = Field(primary_key=True, max_length=255)
    kind: str = Field(max_length=16)  # scalar | list | row | table | image
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    count: int = 0  # points stored
    # The index a point logged without a step gets (one past the highest so far): a
    # ``log(..., step=5)`` is stored at index 5.
    next_idx: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class MetricPoint(SQLModel, table=True):
    """One value of a series. ``producer``/``seq``/``sub`` identify the logging call that
    made it (a replayed batch is recognised); ``idx`` is its position in the series."""

    __table_args__ = (
        UniqueConstraint("run_id", "producer", "seq", "sub"),
        Index("ix_metricpoint_series", "run_id", "name", "column", "idx"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id")
    name: str = Field(max_length=255)
    column: str = Field(default="", max_length=255)
    producer: str = Field(max_length=64)  # the channel or client that logged it
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    sub: int = 0
    idx: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Numbers (NaN and infinities too) in value, strings in text; vtype says which Python
    # type was logged (f float, i int, b bool, s str) so it reads back exactly as logged.
    value: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    vtype: str = Field(default="f", max_length=1)
    logged_at: float = Field(sa_column=Column(Double, nullable=False))


class MetricRollup(SQLModel, table=True):
    """A series summarised per ``ROLLUP_SPAN`` indexes (first, last, extremes, count), kept
    by the ingest as points arrive. A chart of a long series reads these instead of every
    point: a million points are a thousand rows."""

    run_id: str = Field(primary_key=True, foreign_key="run.id")
    name: str = Field(primary_key=True, max_length=255)
    column: str = Field(default="", primary_key=True, max_length=255)
    bucket: int = Field(primary_key=True, sa_type=BigInteger)  # idx // ROLLUP_SPAN
    first_idx: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_idx: int = Field(sa_column=Column(BigInteger, nullable=False))
    min_value: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    max_value: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    n: int = 0


ROLLUP_SPAN = 1024


class RunTag(SQLModel, table=True):
    """A tag changes freely; one set without a value (``run.tag("key")``) holds NULL."""

    run_id: str = Field(foreign_key="run.id", primary_key=True)
    key: str = Field(primary_key=True, max_length=255)
    value: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class RunProperty(SQLModel, table=True):
    """Set once: a property, unlike a tag, never changes."""

    run_id: str = Field(foreign_key="run.id", primary_key=True)
    key: str = Field(primary_key=True, max_length=255)
    value: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


# --- tokens and audit -----------------------------------------------------------------------

TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


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
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    expires_at: datetime | None = _ts()
    revoked_at: datetime | None = _ts()
    last_used_at: datetime | None = _ts()


class TokenCreate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    name: str
    role: TokenRole
    clusters: list[str] = Field(default_factory=list, max_length=100)
    expires_at: datetime | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not TOKEN_NAME.match(value):
            raise ValueError(
                "token names are 1-64 characters: letters, digits, '_', '.', '@' and '-'"
            )
        return value

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


class AuditEvent(SQLModel, table=True):
    """Who did what, when: submissions, cancels, cluster and token changes, sign-ins."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True),
    )
    actor: str = Field(max_length=64, index=True)
    token_id: str | None = Field(default=None, max_length=32)
    action: str = Field(max_length=32, index=True)
    target: str = Field(default="", max_length=300)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class AuditEventsPublic(SQLModel):
    data: list[AuditEvent]
    count: int
