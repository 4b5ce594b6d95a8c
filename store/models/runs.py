"""Runs: what a client submits, the run as stored and as shown, what may change on it,
and what it leaves behind (its log and its output files)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, field_validator, model_validator
from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlalchemy import Enum as SAEnum
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel

from protocol.environment_used import EnvironmentUsed
from protocol.environments import check_environment
from protocol.limits import (
    MAX_ARRAY_STORED_BYTES,
    MAX_DISPLAY_NAME,
    MAX_PRIORITY,
    MIN_PRIORITY,
    TAG_KEY_LENGTH,
    TAG_VALUE_LENGTH,
)
from runyard.status import RunStatus
from store.models.names import (
    check_cluster_name,
    check_experiment_name,
    creation_timestamp,
    optional_timestamp,
)


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
    team: str | None = Field(
        default=None,
        max_length=32,
        description="Team charged for the run (one the token belongs to); none: the "
        "token's default team",
    )
    preemptible: bool = Field(
        default=True,
        description="False: never preempted, and so limited to its team's nominal quota",
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


# One run's arguments in a job array: as many as ``RunSpec.arguments`` allows.
ArgumentList = Annotated[list[str], Field(max_length=1000)]

# A bulk submit queues at most this many runs: enough for a large sweep in one request,
# bounded so one request cannot fill the queue without limit (see docs/operations.md).
MAX_ARRAY_RUNS = 10_000


class RunArraySpec(RunSpec):
    """A job array (``POST /api/v1/runs/array``): one snapshot, one environment, one run per
    argument list. Every field but ``arguments`` applies to each run alike."""

    arguments_list: list[ArgumentList] = Field(
        min_length=1,
        max_length=MAX_ARRAY_RUNS,
        description="One argument list per run; run i gets arguments_list[i]",
    )

    @field_validator("arguments_list")
    @classmethod
    def _printable_argument_lists(cls, value: list[list[str]]) -> list[list[str]]:
        for index, arguments in enumerate(value):
            if any("\x00" in a for a in arguments):
                raise ValueError(
                    f"arguments_list[{index}]: arguments cannot contain NUL characters"
                )
        return value

    @model_validator(mode="after")
    def _one_way_to_give_arguments(self) -> RunArraySpec:
        if self.arguments:
            raise ValueError("a job array takes arguments_list, not arguments")
        if self.parent_run_id is not None:
            raise ValueError("a job array is top-level: parent_run_id is not allowed")
        self._bounded_copies()
        return self

    def _bounded_copies(self) -> None:
        """Every run of the array stores its own copy of the environment, the tags and an
        argument list: refuse, before anything is stored, an array whose copies would
        together exceed MAX_ARRAY_STORED_BYTES."""
        count = len(self.arguments_list)
        environment = _json_bytes(self.environment)
        tags = _json_bytes(self.tags)
        arguments = max(_json_bytes(a) for a in self.arguments_list)
        total = count * (environment + tags + arguments)
        if total > MAX_ARRAY_STORED_BYTES:
            raise ValueError(
                f"a job array stores environment, tags and an argument list in each of its "
                f"{count} runs: {count} x ({environment} environment + {tags} tags + "
                f"{arguments} longest arguments_list entry) = {total} bytes, over the "
                f"{MAX_ARRAY_STORED_BYTES} byte limit; shrink the environment or tags, or "
                f"split the array"
            )


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


class RunArrayPublic(SQLModel):
    """What a bulk submit answers: the array, and its runs' ids in index order (run i is
    ``<array_id>_<i>``, i zero-padded to the width of the last index, so that ids sort as
    indexes do and the queue takes an array's runs in index order)."""

    array_id: str
    experiment: str
    cluster: str
    count: int
    run_ids: list[str]


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
    # An environment build (``env.build(ws)``): its worker builds the environment and ends.
    build_only: bool = False
    # A job array's runs (one bulk submit) share its id; each has its place in it.
    array_id: str | None = Field(default=None, max_length=300, index=True)
    array_index: int | None = None
    exit_code: int | None = None
    failure_reason: str | None = Field(default=None, sa_column=Column(Text))
    # Teams (``scheduler.policy``): who is charged, whether it may be preempted, and what
    # its preemptions were (the latest's by whom and why stays after its requeue).
    team: str | None = Field(default=None, max_length=32)
    preemptible: bool = True
    preemptions: int = 0
    previous_attempt_preempted: bool = False
    preempt_requested_at: datetime | None = optional_timestamp()
    preempted_by: str | None = Field(default=None, sa_column=Column(Text))
    preemption_reason: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = creation_timestamp()
    dispatched_at: datetime | None = optional_timestamp()
    # One timestamp per state reached (named by runyard.status.TIMESTAMP_FIELD).
    not_started_at: datetime | None = optional_timestamp()
    queued_at: datetime | None = optional_timestamp()
    preparing_at: datetime | None = optional_timestamp()
    starting_at: datetime | None = optional_timestamp()
    running_at: datetime | None = optional_timestamp()
    finalizing_at: datetime | None = optional_timestamp()
    cancel_requested_at: datetime | None = optional_timestamp()
    not_responding_at: datetime | None = optional_timestamp()
    completed_at: datetime | None = optional_timestamp()
    failed_at: datetime | None = optional_timestamp()
    canceled_at: datetime | None = optional_timestamp()


# When a run ended: the one terminal timestamp it has (None while it has not ended).
ENDED_AT = "coalesce(completed_at, failed_at, canceled_at)"


class Run(RunBase, table=True):
    # Every listing walks one of these in its own order, a page at a time (migration 0012):
    # the queue in start order, a cluster's history by end, runs newest first by each
    # filter, a run's children in the order they were made.
    __table_args__ = (
        Index("ix_run_queue", "cluster", "status", "dispatched_at", "priority", "created_at", "id"),
        # A team's own queue on a cluster, per kind (admission reads the head of each:
        # ``scheduler.queue_head``).
        Index(
            "ix_run_team_kind_queue",
            "cluster",
            "team",
            "preemptible",
            "status",
            "dispatched_at",
            "priority",
            "created_at",
            "id",
        ),
        Index("ix_run_cluster_ended", "cluster", sql_text(ENDED_AT), "id"),
        Index("ix_run_created", "created_at", "id"),
        Index("ix_run_cluster_created", "cluster", "created_at", "id"),
        Index("ix_run_status_created", "status", "created_at", "id"),
        Index("ix_run_parent_created", "parent_run_id", "created_at", "id"),
        Index("ix_run_experiment_created", "experiment_id", "created_at", "id"),
        Index(
            "ix_run_experiment_parent_created",
            "experiment_id",
            "parent_run_id",
            "created_at",
            "id",
        ),
    )

    id: str = Field(primary_key=True, max_length=300)
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    # Interactive runs: the token that started them. Its run token dies with it, since the
    # person holding the notebook is the one whose access was taken away.
    issued_by_token: str | None = Field(default=None, max_length=32)
    # What its worker ran it with (``protocol.environment_used``), once it has started;
    # a requeue clears it and the next attempt's report replaces it. Shown in one run's
    # details, not in listings.
    environment_used: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class RunPublic(RunBase):
    id: str
    experiment: str
    position: int | None = None
    pending_reason: str | None = None
    ended_at: datetime | None = None


class RunDetails(RunPublic):
    """One run as ``GET /runs/{id}`` shows it: with the environment it ran with, which a
    listing leaves out (its package list may be long)."""

    environment_used: EnvironmentUsed | None = Field(
        default=None,
        description="The environment the run's worker ran it with: name, version, content "
        "hash, resolved packages (none until the run reached Starting)",
    )


NEXT_CURSOR = (
    "Send as cursor= for the next page, in the same list with the same filters; null on "
    "the last page"
)


class RunsPublic(SQLModel):
    """A page of runs (``store.paging``)."""

    data: list[RunPublic]
    count: int | None = Field(
        description="Runs matching in all (from maintained counters); null where that "
        "would take a scan of every run: tag or property filters, or a cluster and an "
        "experiment together"
    )
    next_cursor: str | None = Field(default=None, description=NEXT_CURSOR)


class CancelResult(SQLModel):
    id: str
    status: RunStatus | None = None
    error: str | None = None


class CancelResults(SQLModel):
    data: list[CancelResult]
    count: int


class BulkCancel(SQLModel):
    run_ids: list[str] = Field(min_length=1, max_length=1000)


class RunChange(SQLModel):
    """What may change on a waiting run: its place in the queue."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    priority: int | None = Field(default=None, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    move_to_front: bool = False


class FailRequest(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    error: str = Field(default="failed by request", max_length=10_000)


# --- interactive runs (``Experiment.start_logging()``) and run tokens ----------------------


class InteractiveRun(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    experiment: str
    display_name: str | None = Field(default=None, max_length=MAX_DISPLAY_NAME)

    @field_validator("experiment")
    @classmethod
    def _valid_experiment(cls, value: str) -> str:
        return check_experiment_name(value)


class InteractiveRunPublic(RunPublic):
    run_token: str  # what the client logs with: this run and its children, while it runs


class RunTokenRequest(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    attempt: int = Field(ge=1)


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
    created_at: datetime = creation_timestamp()


class RunFilePublic(SQLModel):
    name: str
    size: int
    created_at: datetime


class RunFilesPublic(SQLModel):
    data: list[RunFilePublic]
    count: int
