"""Experiments: the named groups runs are submitted under (created on first submit)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from store.models.names import creation_timestamp
from store.models.runs import NEXT_CURSOR, RunPublic


class Experiment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=255)
    created_at: datetime = creation_timestamp()


class ExperimentPublic(SQLModel):
    name: str
    created_at: datetime
    run_count: int = 0


class ExperimentsPublic(SQLModel):
    data: list[ExperimentPublic]
    count: int
    next_cursor: str | None = Field(default=None, description=NEXT_CURSOR)


class ExperimentRunPublic(RunPublic):
    """A run as the experiment's table shows it: with its tags and the latest value of
    each series asked for."""

    tags: dict[str, str | None] = {}
    metrics: dict[str, Any] = {}


class ExperimentRunsPublic(SQLModel):
    data: list[ExperimentRunPublic]
    count: int | None = Field(
        description="Runs matching in all; null with a cluster or tag filter (a scan)"
    )
    next_cursor: str | None = Field(default=None, description=NEXT_CURSOR)
    metric_names: list[str]  # the single-column series these runs logged, to choose from
