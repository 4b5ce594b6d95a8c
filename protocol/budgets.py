"""What one run may put into the service, set per cluster, enforced where the bytes enter.

A run is hostile until proven otherwise: without budgets one script could fill Redis (and
stop every cluster), the database or the file store. Each budget is checked where its bytes
come in: tracking events by the worker reading the channel, log output by the worker's
pump, files by the API that stores them, child runs by the API and the ingest. A run over a
rate is slowed down (what it wrote waits in its own channel file); a run over a total is
stopped and ends Failed with the budget named in its log and its record. Other runs never
notice.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MiB = 1024 * 1024
GiB = 1024 * MiB


class RunBudgets(BaseModel):
    """Per run (a child run counts towards its root's tree where it says so)."""

    model_config = ConfigDict(extra="forbid")

    tracking_bytes_per_second: int = Field(
        default=8 * MiB, ge=1024, description="Tracking events read from the run's channel"
    )
    tracking_bytes: int = Field(
        default=2 * GiB, ge=1024, description="Tracking events in all (metrics, tags, ...)"
    )
    log_bytes: int = Field(default=1 * GiB, ge=1024, description="Output (stdout and stderr)")
    files: int = Field(default=10_000, ge=1, description="Files stored for the run")
    file_bytes: int = Field(default=20 * GiB, ge=1024, description="Bytes of those files")
    children: int = Field(
        default=10_000, ge=0, description="Child runs across the whole tree of its root"
    )
    workspace_bytes: int = Field(
        default=50 * GiB,
        ge=1024,
        description="What the run keeps in its working folder (looked at every 2 s)",
    )

    @classmethod
    def of(cls, value: dict[str, Any] | None) -> RunBudgets:
        return cls.model_validate(value or {})


def check_budgets(value: dict[str, Any]) -> dict[str, Any]:
    """A cluster's ``budgets`` setting: only what is given is kept (the rest defaults)."""
    return RunBudgets.model_validate(value).model_dump(exclude_unset=True)


def over(budgets: RunBudgets, field: str) -> str:
    """Why a run over ``field`` is stopped: ``over its budget of 2 GiB of tracking events
    (budgets.tracking_bytes)`` (in its log and its record)."""
    what, in_bytes = _WHAT[field]
    limit = getattr(budgets, field)
    if in_bytes:
        unit, size = next(
            (u, s)
            for u, s in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024), ("bytes", 1))
            if limit >= s
        )
        amount = f"{limit / size:.3g} {unit}"
    else:
        amount = f"{limit:,}"
    return f"over its budget of {amount} of {what} (cluster setting budgets.{field})"


_WHAT = {
    "tracking_bytes": ("tracking events", True),
    "log_bytes": ("output", True),
    "files": ("files", False),
    "file_bytes": ("stored files", True),
    "children": ("child runs", False),
    "workspace_bytes": ("disk in its working folder", True),
}
