"""Experiments: the named groups runs are submitted under (created on first submit)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlmodel import col, func, select

from api.auth import ALLOW
from api.deps import SessionDep
from api.live import json_safe
from runyard.errors import NotFound
from store import runs as run_service
from store.db import as_utc
from store.models import Experiment, ExperimentPublic, ExperimentsPublic, Run, RunTag
from store.tracking import reads

router = APIRouter(prefix="/experiments", tags=["experiments"])


def _query():  # type: ignore[no-untyped-def]
    return (
        select(Experiment, func.count(col(Run.id)))
        .join(Run, isouter=True)
        .group_by(col(Experiment.id))
        .order_by(col(Experiment.name))
    )


def _public(experiment: Experiment, runs: int) -> ExperimentPublic:
    return ExperimentPublic(
        name=experiment.name, created_at=as_utc(experiment.created_at), run_count=runs
    )


@router.get("", operation_id="list_experiments", dependencies=[ALLOW.read])
def list_experiments(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ExperimentsPublic:
    total = session.exec(select(func.count(col(Experiment.id)))).one()
    data = [_public(e, n) for e, n in session.exec(_query().offset(offset).limit(limit))]
    return ExperimentsPublic(data=data, count=total)


@router.get("/{name}", operation_id="get_experiment", dependencies=[ALLOW.read])
def get_experiment(name: str, session: SessionDep) -> ExperimentPublic:
    row = session.exec(_query().where(Experiment.name == name)).first()
    if row is None:
        raise NotFound(f"no experiment named {name!r}")
    return _public(*row)


@router.get("/{name}/runs", operation_id="list_experiment_runs", dependencies=[ALLOW.read])
def list_experiment_runs(
    name: str,
    session: SessionDep,
    metric: Annotated[list[str], Query(max_length=20, description="Latest values of")] = [],  # noqa: B006
    include_children: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The experiment's runs, newest first, each with its tags and the latest value of the
    chosen series; and the series names there are to choose from (the Studio's table)."""
    experiment = session.exec(select(Experiment).where(Experiment.name == name)).first()
    if experiment is None:
        raise NotFound(f"no experiment named {name!r}")
    query = select(Run).where(Run.experiment_id == experiment.id)
    if not include_children:
        query = query.where(col(Run.parent_run_id).is_(None))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    runs = list(
        session.exec(query.order_by(col(Run.created_at).desc()).offset(offset).limit(limit))
    )
    ids = [r.id for r in runs]
    tags: dict[str, dict[str, str]] = {}
    for run_id, key, value in session.exec(
        select(RunTag.run_id, RunTag.key, RunTag.value).where(col(RunTag.run_id).in_(ids))
    ):
        tags.setdefault(run_id, {})[key] = value
    latest = reads.latest_values(session, ids, metric)
    data = [
        {
            **run_service.public(run, name).model_dump(mode="json"),
            "tags": tags.get(run.id, {}),
            "metrics": json_safe(latest.get(run.id, {})),
        }
        for run in runs
    ]
    names = reads.series_names(session, ids)
    return {"data": data, "count": total, "metric_names": names}
