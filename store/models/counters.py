"""Counters the database keeps up to date as runs change (triggers of migration 0012), so
counts per cluster and status, run counts per experiment and everything ``/metrics``
reports are read from a few rows instead of by scanning every run ever submitted.

Each row is a sum over the runs as they are now: a trigger on ``run`` takes away what a
row counted for before a change and adds what it counts for after it (insert, update,
delete alike). ``store.counters.recount`` computes the same sums by scanning runs.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer
from sqlmodel import Field, SQLModel

# Where a run without a cluster is counted (interactive runs, runs of a deleted cluster).
NO_CLUSTER = ""

# Histogram kinds of ``RunTimingBucket``.
WAIT = "wait"  # queued_at -> preparing_at: from submit until a node took the run
DURATION = "duration"  # running_at -> its end (completed, failed or canceled)


class RunCount(SQLModel, table=True):
    """Runs per cluster (``NO_CLUSTER`` for none), status and top-level or child."""

    cluster: str = Field(primary_key=True, max_length=32)
    status: str = Field(primary_key=True, max_length=20)
    top_level: bool = Field(primary_key=True)
    n: int = 0


class ExperimentRunCount(SQLModel, table=True):
    """Runs per experiment, status and top-level or child."""

    experiment_id: int = Field(
        sa_column=Column(Integer, primary_key=True, autoincrement=False, nullable=False)
    )
    status: str = Field(primary_key=True, max_length=20)
    top_level: bool = Field(primary_key=True)
    n: int = 0


class ClusterCancelCount(SQLModel, table=True):
    """Top-level runs of a cluster that were cancelled (``canceled_at`` set)."""

    cluster: str = Field(primary_key=True, max_length=32)
    n: int = 0


class RunTimingBucket(SQLModel, table=True):
    """One histogram bucket of a cluster's queue waits or run durations: how many runs
    fell in it (not cumulative: bucket ``i`` holds the values above bound ``i-1`` up to
    bound ``i``, the last one those above every bound) and their sum in microseconds."""

    cluster: str = Field(primary_key=True, max_length=32)
    kind: str = Field(primary_key=True, max_length=10)
    bucket: int = Field(
        sa_column=Column(Integer, primary_key=True, autoincrement=False, nullable=False)
    )
    n: int = 0
    sum_us: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
