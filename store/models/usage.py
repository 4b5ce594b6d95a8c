"""Usage accounting as the API shows it: slot- and GPU-seconds of run attempts, summed per
team, user, cluster and day (``store.usage``)."""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Field, SQLModel

# What a report may be grouped by, in the order its columns are shown.
USAGE_GROUPS = ("team", "user", "cluster", "day")


class UsageRow(SQLModel):
    """One group's usage within the period. A key the report is not grouped by is null;
    ``team`` is "" for runs of no team."""

    team: str | None = None
    user: str | None = Field(default=None, description="The token that submitted the runs")
    cluster: str | None = None
    day: date | None = Field(default=None, description="UTC day")
    attempts: int = Field(description="Attempts that held a slot within the group's period")
    slot_seconds: float
    gpu_seconds: float
    slot_hours: float
    gpu_hours: float


class UsageReport(SQLModel):
    since: datetime
    until: datetime
    by: list[str]
    data: list[UsageRow]
    total: UsageRow = Field(description="Every row together (keys null)")
