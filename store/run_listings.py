"""Runs as the API shows them: one run with its queue place, a cluster's queue, active and
recent runs, and the filtered, paged listing. Reads only."""

from __future__ import annotations

from collections.abc import Sequence

import redis
from sqlmodel import Session, col, func, select

from protocol.workers import WorkerInfo, live_workers, workers_serving
from runyard.status import ACTIVE, TERMINAL, WAITING, RunStatus
from store.clusters import get_cluster
from store.db import as_utc
from store.models import Experiment, Run, RunDetails, RunProperty, RunPublic, RunTag
from store.queue import (
    HANDED_OVER,
    annotate_queue,
    capacity,
    capacity_of,
    pending_reason,
    position_of,
    queue_order,
    slots_held,
)


def experiment_names(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.exec(select(Experiment.id, Experiment.name).where(col(Experiment.id).in_(ids)))
    return dict(rows.all())  # type: ignore[arg-type]


def public(
    run: Run, experiment: str, position: int | None = None, reason: str | None = None
) -> RunPublic:
    data = run.model_dump()
    for key, value in data.items():
        if key.endswith("_at"):
            data[key] = as_utc(value)
    ended = data["completed_at"] or data["failed_at"] or data["canceled_at"]
    return RunPublic(
        **data, experiment=experiment, position=position, pending_reason=reason, ended_at=ended
    )


def public_runs(session: Session, runs: Sequence[Run]) -> list[RunPublic]:
    names = experiment_names(session, {r.experiment_id for r in runs})
    return [public(r, names.get(r.experiment_id, "")) for r in runs]


def describe(session: Session, client: redis.Redis, run: Run) -> RunDetails:
    """The run, with its queue position and pending reason while it waits, and the
    environment its worker ran it with."""
    shown = _placed(session, client, run)
    return RunDetails(**shown.model_dump(), environment_used=run.environment_used)


def _placed(session: Session, client: redis.Redis, run: Run) -> RunPublic:
    experiment = experiment_names(session, {run.experiment_id}).get(run.experiment_id, "")
    if run.status not in WAITING or not run.cluster:
        return public(run, experiment)
    if run.dispatched_at is not None:
        return public(run, experiment, None, HANDED_OVER)
    cluster = get_cluster(session, run.cluster)
    workers = live_workers(client)
    position = position_of(session, run)
    serving = len(workers_serving(workers, cluster.name))
    cap = capacity(session, cluster, workers, besides=run.id)
    reason = pending_reason(cluster, cap, serving, position)
    return public(run, experiment, position, reason)


def queued_runs(session: Session, client: redis.Redis, cluster_name: str) -> list[RunPublic]:
    annotated = _annotated_queue(session, cluster_name, live_workers(client))
    names = experiment_names(session, {run.experiment_id for run, _, _ in annotated})
    return [
        public(run, names.get(run.experiment_id, ""), position, reason)
        for run, position, reason in annotated
    ]


def _annotated_queue(
    session: Session, cluster_name: str, workers: list[WorkerInfo]
) -> list[tuple[Run, int | None, str]]:
    """The cluster's queue with positions and reasons. The runs and the count of slots held
    are read in one statement, so both see the same moment: a run the scheduler hands over
    meanwhile is either waiting in the list or counted, never both (it would hold the very
    slot it waits for)."""
    cluster = get_cluster(session, cluster_name)
    held = slots_held(cluster_name).scalar_subquery()
    rows = session.exec(
        select(Run, held)
        .where(Run.cluster == cluster_name, col(Run.status).in_(WAITING))
        .order_by(col(Run.dispatched_at).is_(None), *queue_order())
    ).all()
    runs = [run for run, _ in rows]
    cap = capacity_of(cluster, workers, rows[0][1] if rows else 0)
    return annotate_queue(runs, cluster, cap, workers)


def queue_places(
    session: Session, client: redis.Redis, runs: Sequence[Run]
) -> dict[str, tuple[int | None, str]]:
    """Position and pending reason of the waiting ones among ``runs``: one pass over each
    of their clusters' queues, so a listing reads them as ``describe`` does one run."""
    clusters = {r.cluster for r in runs if r.status in WAITING and r.cluster}
    if not clusters:
        return {}
    workers = live_workers(client)
    return {
        run.id: (position, reason)
        for name in sorted(clusters)
        for run, position, reason in _annotated_queue(session, name, workers)
    }


def cluster_active(session: Session, cluster_name: str) -> list[RunPublic]:
    get_cluster(session, cluster_name)
    runs = session.exec(
        select(Run)
        .where(Run.cluster == cluster_name, col(Run.status).in_(ACTIVE))
        .order_by(col(Run.preparing_at), col(Run.id))
    )
    return public_runs(session, list(runs))


def cluster_history(session: Session, cluster_name: str, limit: int = 10) -> list[RunPublic]:
    """The cluster's last ``limit`` ended runs, the latest ending first: what it did lately."""
    get_cluster(session, cluster_name)
    ended = func.coalesce(Run.completed_at, Run.failed_at, Run.canceled_at)
    runs = session.exec(
        select(Run)
        .where(Run.cluster == cluster_name, col(Run.status).in_(TERMINAL))
        .order_by(ended.desc(), col(Run.id))
        .limit(limit)
    )
    return public_runs(session, list(runs))


def list_runs(
    session: Session,
    *,
    cluster: str | None = None,
    experiment: str | None = None,
    parent: str | None = None,
    statuses: Sequence[RunStatus] | None = None,
    tags: dict[str, str | None] | None = None,
    properties: dict[str, str | None] | None = None,
    top_level: bool = False,
    limit: int = 100,
    offset: int = 0,
    client: redis.Redis | None = None,
) -> tuple[list[RunPublic], int]:
    """Runs matching every filter. ``tags`` / ``properties``: each key must be set, to the
    given value unless that is None (Azure's ``get_runs(tags=...)``). With ``client``,
    waiting runs carry their queue position and pending reason."""
    query = select(Run)
    if cluster is not None:
        get_cluster(session, cluster)
        query = query.where(Run.cluster == cluster)
    if experiment is not None:
        query = query.join(Experiment).where(Experiment.name == experiment)
    if parent is not None:
        query = query.where(Run.parent_run_id == parent)
    if top_level:
        query = query.where(col(Run.parent_run_id).is_(None))
    if statuses:
        query = query.where(col(Run.status).in_(statuses))
    for table, wanted in ((RunTag, tags), (RunProperty, properties)):
        for key, value in (wanted or {}).items():
            match = select(table.run_id).where(table.key == key)  # type: ignore[attr-defined]
            if value is not None:
                match = match.where(table.value == value)  # type: ignore[attr-defined]
            query = query.where(col(Run.id).in_(match))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    # Children in the order they were made; everything else newest first.
    order = (
        (col(Run.created_at), col(Run.id)) if parent else (col(Run.created_at).desc(), col(Run.id))
    )
    runs = list(session.exec(query.order_by(*order).offset(offset).limit(limit)))
    if client is None:
        return public_runs(session, runs), total
    places = queue_places(session, client, runs)
    names = experiment_names(session, {r.experiment_id for r in runs})
    data = [
        public(r, names.get(r.experiment_id, ""), *places.get(r.id, (None, None))) for r in runs
    ]
    return data, total
