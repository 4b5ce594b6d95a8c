"""Experiments as the API lists them: with their run counts, and an experiment's runs as
its table in the Studio shows them (tags and the latest value of chosen series)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, func, select

from runyard.errors import NotFound
from store import run_listings
from store.db import as_utc
from store.models import (
    Experiment,
    ExperimentPublic,
    ExperimentRunPublic,
    ExperimentRunsPublic,
    ExperimentsPublic,
    Run,
    RunTag,
)
from store.tracking import reads


def _with_run_counts():  # type: ignore[no-untyped-def]
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


def list_experiments(session: Session, limit: int, offset: int) -> ExperimentsPublic:
    """A page of experiments by name, and how many there are in all."""
    total = session.exec(select(func.count(col(Experiment.id)))).one()
    rows = session.exec(_with_run_counts().offset(offset).limit(limit))
    return ExperimentsPublic(data=[_public(e, n) for e, n in rows], count=total)


def get_experiment(session: Session, name: str) -> ExperimentPublic:
    row = session.exec(_with_run_counts().where(Experiment.name == name)).first()
    if row is None:
        raise NotFound(f"no experiment named {name!r}")
    return _public(*row)


def experiment_runs(
    session: Session,
    name: str,
    metrics: list[str],
    *,
    include_children: bool,
    limit: int,
    offset: int,
) -> ExperimentRunsPublic:
    """The experiment's runs, newest first, each with its tags and the latest value of the
    series in ``metrics``; and the series names there are to choose from. The values are
    as logged (NaN included): the API makes them browser-safe."""
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
    tags: dict[str, dict[str, str | None]] = {}
    for run_id, key, value in session.exec(
        select(RunTag.run_id, RunTag.key, RunTag.value).where(col(RunTag.run_id).in_(ids))
    ):
        tags.setdefault(run_id, {})[key] = value
    latest: dict[str, dict[str, Any]] = reads.latest_values(session, ids, metrics)
    data = [
        ExperimentRunPublic(
            **run_listings.public(run, name).model_dump(),
            tags=tags.get(run.id, {}),
            metrics=latest.get(run.id, {}),
        )
        for run in runs
    ]
    names = reads.series_names(session, ids)
    return ExperimentRunsPublic(data=data, count=total, metric_names=names)
