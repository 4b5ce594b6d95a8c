"""Experiments: the named groups runs are submitted under (created on first submit)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import col, func, select

from api.deps import SessionDep
from runyard.errors import NotFound
from scheduler.db import as_utc
from scheduler.models import Experiment, ExperimentPublic, ExperimentsPublic, Run

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


@router.get("", operation_id="list_experiments")
def list_experiments(session: SessionDep) -> ExperimentsPublic:
    data = [_public(e, n) for e, n in session.exec(_query())]
    return ExperimentsPublic(data=data, count=len(data))


@router.get("/{name}", operation_id="get_experiment")
def get_experiment(name: str, session: SessionDep) -> ExperimentPublic:
    row = session.exec(_query().where(Experiment.name == name)).first()
    if row is None:
        raise NotFound(f"no experiment named {name!r}")
    return _public(*row)
