"""Experiments: the named groups runs are submitted under (created on first submit)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import ALLOW
from api.deps import SessionDep
from api.live import json_safe
from api.paging import DEFAULT_PAGE, Cursor, KeyFilter, Limit, Offset, key_filter
from runyard.status import RunStatus
from store import experiments as experiment_service
from store.models import ExperimentPublic, ExperimentRunsPublic, ExperimentsPublic

router = APIRouter(prefix="/experiments", tags=["experiments"])


@router.get("", operation_id="list_experiments", dependencies=[ALLOW.read])
def list_experiments(
    session: SessionDep,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    offset: Offset = 0,
) -> ExperimentsPublic:
    """A page of experiments by name, each with its run count."""
    return experiment_service.list_experiments(session, limit, offset, cursor)


@router.get("/{name}", operation_id="get_experiment", dependencies=[ALLOW.read])
def get_experiment(name: str, session: SessionDep) -> ExperimentPublic:
    return experiment_service.get_experiment(session, name)


@router.get("/{name}/runs", operation_id="list_experiment_runs", dependencies=[ALLOW.read])
def list_experiment_runs(
    name: str,
    session: SessionDep,
    metric: Annotated[list[str], Query(max_length=20, description="Latest values of")] = [],  # noqa: B006
    include_children: bool = False,
    status: Annotated[list[RunStatus] | None, Query(description="Only runs in these")] = None,
    cluster: Annotated[str | None, Query(description="Only runs of this cluster")] = None,
    tags: KeyFilter = None,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    offset: Offset = 0,
) -> ExperimentRunsPublic:
    """A page of the experiment's runs, newest first, each with its tags and the latest
    value of the chosen series; and the series names there are to choose from (the
    Studio's table). ``status``, ``cluster`` and ``tags`` filter the whole experiment;
    ``count`` is null with a cluster or tag filter."""
    page = experiment_service.experiment_runs(
        session,
        name,
        metric,
        include_children=include_children,
        limit=limit,
        offset=offset,
        cursor=cursor,
        statuses=status,
        cluster=cluster,
        tags=key_filter("tags", tags),
    )
    for run in page.data:
        run.metrics = json_safe(run.metrics)  # a browser's JSON has no NaN
    return page
