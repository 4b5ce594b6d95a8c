"""Clusters: CRUD, the runs queued and active on each, bulk cancel of a queue."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, status

from api.auth import ALLOW, ActorDep
from api.deps import ServicesDep, SessionDep
from api.paging import DEFAULT_PAGE, Cursor, Limit, Offset
from protocol.workers import live_workers
from store import audit, run_listings, team_status
from store import clusters as cluster_service
from store import runs as run_service
from store.announcements import Announcements, wake
from store.models import (
    CancelResults,
    ClusterCreate,
    ClusterPublic,
    ClustersPublic,
    ClusterUpdate,
    RunsPublic,
    utcnow,
)

router = APIRouter(prefix="/clusters", tags=["clusters"])


def _view(session: SessionDep, services: ServicesDep, name: str) -> ClusterPublic:
    cluster = cluster_service.get_cluster(session, name)
    counts = cluster_service.run_counts(session, name).get(name)
    workers = live_workers(services.redis)
    teams = team_status.team_status(session, cluster, workers, utcnow())
    return cluster_service.public_view(cluster, workers, counts, teams)


@router.get("", operation_id="list_clusters", dependencies=[ALLOW.read])
def list_clusters(
    session: SessionDep,
    services: ServicesDep,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    offset: Offset = 0,
) -> ClustersPublic:
    """A page of clusters by name, each with its workers and its queued and active counts."""
    return cluster_service.list_clusters(
        session, services.redis, limit=limit, cursor=cursor, offset=offset
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_cluster",
    dependencies=[ALLOW.admin],
)
def create_cluster(
    body: ClusterCreate, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> ClusterPublic:
    cluster_service.create_cluster(session, body)
    audit.record(session, actor, "cluster.create", body.name, **body.model_dump(mode="json"))
    session.commit()
    return _view(session, services, body.name)


@router.get("/{name}", operation_id="get_cluster", dependencies=[ALLOW.read])
def get_cluster(name: str, session: SessionDep, services: ServicesDep) -> ClusterPublic:
    return _view(session, services, name)


@router.patch("/{name}", operation_id="update_cluster", dependencies=[ALLOW.admin])
def update_cluster(
    name: str, body: ClusterUpdate, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> ClusterPublic:
    cluster_service.update_cluster(session, name, body)
    changes = body.model_dump(mode="json", exclude_unset=True)
    audit.record(session, actor, "cluster.update", name, **changes)
    session.commit()
    wake(services.redis, name)  # more nodes may admit runs now
    return _view(session, services, name)


@router.delete("/{name}", operation_id="delete_cluster", dependencies=[ALLOW.admin])
def delete_cluster(
    name: str,
    session: SessionDep,
    services: ServicesDep,
    actor: ActorDep,
    force: bool = Query(False, description="Cancel its queued and active runs first"),
) -> CancelResults:
    live = cluster_service.delete_cluster(session, name, force=force)
    news = Announcements()
    results = run_service.cancel_many(session, services.redis, live, news)
    cluster_service.finish_delete(session, name)
    audit.record(session, actor, "cluster.delete", name, force=force, canceled=len(live))
    session.commit()
    news.send(services.redis)
    return CancelResults(data=results, count=len(results))


@router.get("/{name}/runs", operation_id="list_cluster_runs", dependencies=[ALLOW.read])
def list_cluster_runs(
    name: str,
    session: SessionDep,
    services: ServicesDep,
    status: Literal["queued", "active", "all"] = "all",
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    offset: Offset = 0,
) -> RunsPublic:
    """A page of the cluster's runs: queued ones in start order (each with its position in
    the whole queue and its pending reason), then active ones; ``count`` is all of them."""
    page = run_listings.cluster_runs(
        session, services.redis, name, status, limit=limit, cursor=cursor, offset=offset
    )
    return RunsPublic(data=page.data, count=page.count, next_cursor=page.next_cursor)


@router.get("/{name}/history", operation_id="list_cluster_history", dependencies=[ALLOW.read])
def list_cluster_history(
    name: str,
    session: SessionDep,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    offset: Offset = 0,
) -> RunsPublic:
    """The cluster's history a page at a time: its ended runs, the latest ending first,
    each with its status, reason and times; ``count`` is every ended run of the cluster."""
    page = run_listings.cluster_history(session, name, limit=limit, cursor=cursor, offset=offset)
    return RunsPublic(data=page.data, count=page.count, next_cursor=page.next_cursor)


@router.post(
    "/{name}/cancel-queued", operation_id="cancel_cluster_queue", dependencies=[ALLOW.submit]
)
def cancel_queued(
    name: str, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> CancelResults:
    """Cancel every queued run of the cluster (the whole queue, read a batch at a time)."""
    news = Announcements()
    results = run_service.cancel_queue(session, services.redis, name, news)
    audit.record_cancels(session, actor, results)
    session.commit()
    news.send(services.redis)
    return CancelResults(data=results, count=len(results))
