"""Usage accounting: slot- and GPU-hours of run attempts per team, user, cluster and day.
Any reader may look (the same figures a cluster's page and ``/metrics`` show in part)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import ALLOW
from api.deps import SessionDep
from store import usage
from store.models import UsageReport, utcnow

router = APIRouter(prefix="/usage", tags=["usage"])


@router.get("", operation_id="get_usage", dependencies=[ALLOW.read])
def get_usage(
    session: SessionDep,
    since: Annotated[
        str, Query(description="An age (30d, 12h, 90m, 2w), a date or a date and time (UTC)")
    ] = "30d",
    until: Annotated[str | None, Query(description="As since; none: now")] = None,
    by: Annotated[
        list[str] | None,
        Query(description="team, user, cluster, day: comma-separated or repeated; none: team"),
    ] = None,
    cluster: str | None = None,
    team: Annotated[str | None, Query(description='"" for runs of no team')] = None,
    user: Annotated[str | None, Query(description="The token that submitted the runs")] = None,
) -> UsageReport:
    """Slot- and GPU-seconds (and hours) the runs' attempts held within the period,
    summed per group: every attempt of a requeued run counts, one still running counts up
    to now, one across midnight is split between the days."""
    now = utcnow()
    start = usage.parse_moment(since, now, "since")
    end = usage.parse_moment(until, now, "until") if until else now
    return usage.report(
        session,
        start,
        end,
        usage.parse_groups(by if by is not None else ["team"]),
        cluster=cluster,
        team=team,
        user=user,
        now=now,
    )
