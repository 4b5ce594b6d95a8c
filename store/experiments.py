"""Experiments as the API lists them: with their run counts (maintained counters), and a
page of an experiment's runs as its table in the Studio shows them (tags and the latest
value of chosen series)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session, col, func, select

from runyard.errors import NotFound
from runyard.status import RunStatus
from store import counters, run_listings
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
from store.paging import Key, Section, read_page
from store.tracking import reads


def _public(experiment: Experiment, runs: int) -> ExperimentPublic:
    return ExperimentPublic(
        name=experiment.name, created_at=as_utc(experiment.created_at), run_count=runs
    )


def list_experiments(
    session: Session, limit: int, offset: int = 0, cursor: str | None = None
) -> ExperimentsPublic:
    """A page of experiments by name, each with its run count (from the counters), and how
    many experiments there are in all."""
    section = Section([], (Key(col(Experiment.name), str),), ("name",))
    page = read_page(
        session, "experiments", Experiment, [section], limit=limit, cursor=cursor, offset=offset
    )
    experiments = [e for _, e in page.rows]
    runs = counters.experiment_totals(session, [e.id for e in experiments if e.id is not None])
    total = session.exec(select(func.count(col(Experiment.id)))).one()
    data = [_public(e, runs.get(e.id or 0, 0)) for e in experiments]
    return ExperimentsPublic(data=data, count=total, next_cursor=page.next_cursor)


def get_experiment(session: Session, name: str) -> ExperimentPublic:
    experiment = session.exec(select(Experiment).where(Experiment.name == name)).first()
    if experiment is None or experiment.id is None:
        raise NotFound(f"no experiment named {name!r}")
    return _public(experiment, counters.experiment_total(session, experiment.id))


def experiment_runs(
    session: Session,
    name: str,
    metrics: list[str],
    *,
    include_children: bool,
    limit: int,
    offset: int = 0,
    cursor: str | None = None,
    statuses: Sequence[RunStatus] | None = None,
    cluster: str | None = None,
    tags: dict[str, str | None] | None = None,
) -> ExperimentRunsPublic:
    """The experiment's runs, newest first, each with its tags and the latest value of the
    series in ``metrics``; and the series names there are to choose from. The values are
    as logged (NaN included): the API makes them browser-safe. ``statuses``, ``cluster``
    and ``tags`` filter the whole experiment (the Studio's table filters), read along the
    experiment's index; the count stays exact for a status filter alone (counters) and is
    None with a cluster or tag filter."""
    experiment = session.exec(select(Experiment).where(Experiment.name == name)).first()
    if experiment is None:
        raise NotFound(f"no experiment named {name!r}")
    assert experiment.id is not None
    where: list[Any] = [Run.experiment_id == experiment.id]
    if not include_children:
        where.append(col(Run.parent_run_id).is_(None))
    if statuses:
        where.append(col(Run.status).in_(statuses))
    if cluster:
        where.append(Run.cluster == cluster)
    where += run_listings.key_filters(session, tags or {}, {})
    section = Section(where, run_listings.NEWEST_FIRST, run_listings.BY_CREATION)
    page = read_page(
        session,
        f"experiment:{name}:{int(include_children)}",
        Run,
        [section],
        limit=limit,
        cursor=cursor,
        offset=offset,
    )
    runs = [run for _, run in page.rows]
    total: int | None = None
    if not cluster and not tags:
        total = counters.experiment_total(
            session,
            experiment.id,
            statuses=statuses or None,
            top_level=None if include_children else True,
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
    return ExperimentRunsPublic(
        data=data, count=total, metric_names=names, next_cursor=page.next_cursor
    )
