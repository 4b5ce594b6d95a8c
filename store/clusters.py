"""Named clusters: create, read, update, delete, and the live view of their capacity."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from pydantic import ValidationError
from sqlmodel import Session, col, func, select, update

from protocol.environments import NO_IMAGE, Executor, has_image, wants_container
from protocol.workers import WorkerInfo, live_workers, workers_serving
from runyard.errors import AlreadyExists, ClusterBusy, ClusterNotFound, InvalidInput, NotSupported
from runyard.status import ACTIVE, WAITING, RunStatus
from store import team_status
from store.db import as_utc
from store.models import (
    Cluster,
    ClusterCreate,
    ClusterPublic,
    ClustersPublic,
    ClusterUpdate,
    Run,
    RunCount,
    TeamUsagePublic,
    WorkerPublic,
    utcnow,
)
from store.models.counters import NO_CLUSTER
from store.paging import DEFAULT_PAGE, Key, Section, read_page


def get_cluster(session: Session, name: str) -> Cluster:
    cluster = session.get(Cluster, name)
    if cluster is None:
        raise ClusterNotFound(f"no cluster named {name!r}")
    return cluster


# Azure's compute target for "this machine": the default cluster, unless one has the name.
LOCAL_TARGET = "local"


def resolve_cluster(session: Session, name: str | None) -> Cluster:
    """The cluster a run goes to: the one named, or the default one for no name (and for
    Azure's "local" when no cluster is called that)."""
    if name is not None and (name != LOCAL_TARGET or session.get(Cluster, name) is not None):
        return get_cluster(session, name)
    found = session.exec(select(Cluster).where(col(Cluster.is_default))).first()
    if found is not None:
        return found
    names = sorted(session.exec(select(Cluster.name)))
    existing = f"clusters: {', '.join(names)}" if names else "there are no clusters yet"
    raise InvalidInput(
        f"no compute target and no default cluster ({existing}); name one with "
        "compute_target='NAME' (--cluster NAME), or mark one default: "
        "runyard cluster update NAME --default",
        field="cluster",
    )


def check_isolation(cluster: Cluster, environment: dict[str, Any]) -> None:
    """A run that asks for a container never runs as a host process: a local cluster
    refuses it unless it is set to run such runs in containers."""
    if cluster.executor == Executor.DOCKER or cluster.container_runs:
        return
    if wants_container(environment):
        raise NotSupported(
            f"this run asks for a Docker container (environment.docker), but cluster "
            f"{cluster.name!r} runs scripts as processes on its hosts; submit it to a "
            f"Docker cluster, or let this one run such runs in containers: "
            f"runyard cluster update {cluster.name} --container-runs",
            field="environment.docker",
        )


def check_image(cluster: Cluster, environment: dict[str, Any]) -> None:
    """A run that will run in a container needs an image from somewhere: refused at submit
    when neither its environment nor its cluster names one (it could never start)."""
    in_container = cluster.executor == Executor.DOCKER or wants_container(environment)
    if in_container and not has_image(environment, cluster.container):
        raise NotSupported(NO_IMAGE, field="environment.docker.base_image")


def create_cluster(session: Session, data: ClusterCreate) -> Cluster:
    if session.get(Cluster, data.name) is not None:
        raise AlreadyExists(f"cluster {data.name!r} exists already")
    cluster = Cluster.model_validate(data)
    if cluster.is_default:
        _clear_default(session)
    session.add(cluster)
    session.flush()
    return cluster


def update_cluster(session: Session, name: str, data: ClusterUpdate) -> Cluster:
    cluster = get_cluster(session, name)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if changes.get("is_default"):
        _clear_default(session)
    for key, value in changes.items():
        setattr(cluster, key, value)
    cluster.updated_at = utcnow()
    session.add(cluster)
    session.flush()
    return cluster


def _clear_default(session: Session) -> None:
    """At most one default cluster: marking one unmarks the others (same transaction)."""
    session.execute(update(Cluster).where(col(Cluster.is_default)).values(is_default=False))


def live_run_ids(session: Session, name: str) -> list[str]:
    statuses = (*WAITING, *ACTIVE)
    query = select(Run.id).where(Run.cluster == name, col(Run.status).in_(statuses))
    return list(session.exec(query))


def delete_cluster(session: Session, name: str, *, force: bool = False) -> list[str]:
    """Delete a cluster. Its live runs block this unless ``force``; then the caller cancels
    them (returned) and the finished runs keep their history with no cluster."""
    get_cluster(session, name)
    live = live_run_ids(session, name)
    if live and not force:
        raise ClusterBusy(
            f"cluster {name!r} has {len(live)} queued or active run(s); "
            "cancel them first or delete with force"
        )
    return live


def finish_delete(session: Session, name: str) -> None:
    """The cluster's runs keep their history with no cluster: one UPDATE for all of them,
    however long the history (one per run would load every run, and on PostgreSQL fire the
    counters' trigger on the same counter rows once per run: ``store.lifecycle``)."""
    cluster = get_cluster(session, name)
    session.execute(update(Run).where(col(Run.cluster) == name).values(cluster=None))
    session.delete(cluster)
    session.flush()


def run_counts(session: Session, name: str | None = None) -> dict[str, dict[str, int]]:
    """Queued and active run counts per cluster (or of the one ``name``), read from the
    counters the database maintains (``store.counters``): a few rows, whatever the history."""
    query = select(RunCount.cluster, RunCount.status, func.sum(RunCount.n)).where(
        col(RunCount.status).in_([s.value for s in (*WAITING, *ACTIVE)]),
        RunCount.cluster != NO_CLUSTER,
    )
    if name is not None:
        query = query.where(RunCount.cluster == name)
    counts: dict[str, dict[str, int]] = {}
    for cluster, status, n in session.exec(query.group_by(RunCount.cluster, RunCount.status)):
        bucket = counts.setdefault(cluster, {"queued": 0, "active": 0})
        bucket["queued" if RunStatus(status) in WAITING else "active"] += int(n)
    return counts


def public_view(
    cluster: Cluster,
    workers: list[WorkerInfo],
    counts: dict[str, int] | None = None,
    teams: list[TeamUsagePublic] | None = None,
) -> ClusterPublic:
    serving = workers_serving(workers, cluster.name, draining=True)
    slots = sum(w.slots for w in serving if not w.draining)
    counts = counts or {"queued": 0, "active": 0}
    data = cluster.model_dump()
    data["created_at"], data["updated_at"] = as_utc(cluster.created_at), as_utc(cluster.updated_at)
    return ClusterPublic(
        **data,
        workers=[worker_public(w) for w in serving],
        slots=slots,
        capacity=min(cluster.nodes, slots),
        queued=counts["queued"],
        active=counts["active"],
        teams=teams or [],
    )


def worker_public(info: WorkerInfo) -> WorkerPublic:
    return WorkerPublic(
        id=info.id,
        hostname=info.hostname,
        clusters=info.clusters,
        slots=info.slots,
        busy=info.busy,
        runs=info.runs,
        draining=info.draining,
        last_heartbeat=datetime.fromtimestamp(info.last_heartbeat, UTC),
        gpus=info.gpus,
    )


def list_clusters(
    session: Session,
    client: redis.Redis,
    *,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
    offset: int = 0,
) -> ClustersPublic:
    """A page of clusters by name, with their workers and queued/active counts (counters)."""
    section = Section([], (Key(col(Cluster.name), str),), ("name",))
    page = read_page(
        session, "clusters", Cluster, [section], limit=limit, cursor=cursor, offset=offset
    )
    workers = live_workers(client)
    counts = run_counts(session)
    total = session.exec(select(func.count()).select_from(Cluster)).one()
    with_quotas = team_status.clusters_with_quotas(session)
    now = utcnow()
    data = [
        public_view(
            c,
            workers,
            counts.get(c.name),
            team_status.team_status(session, c, workers, now) if c.name in with_quotas else None,
        )
        for _, c in page.rows
    ]
    return ClustersPublic(data=data, count=total, next_cursor=page.next_cursor)


def apply_config_file(session: Session, path: Path) -> list[str]:
    """Create or update the clusters declared in a TOML file; returns their names.

    ``[[clusters]]`` tables take the same fields as ``runyard cluster create``, and
    ``quotas``: each team's quota on the cluster, ``{team = {slots = 4, ...}}`` (the teams
    are made if missing; quotas the file does not name are left as they are).
    """
    from store.teams import apply_quotas  # store.teams reads clusters: imported on use

    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"cannot read clusters file {path}: {exc}") from exc
    names = []
    for entry in document.get("clusters", []):
        quotas = None
        if isinstance(entry, dict):
            entry = dict(entry)
            quotas = entry.pop("quotas", None)
            if "default" in entry:  # the file says default = true
                entry["is_default"] = entry.pop("default")
        try:
            data = ClusterCreate.model_validate(entry)
        except ValidationError as exc:
            raise InvalidInput(f"{path}: cluster {entry.get('name')!r}: {exc}") from exc
        if session.get(Cluster, data.name) is None:
            create_cluster(session, data)
        else:
            given = data.model_dump(exclude_unset=True, exclude={"name"})
            update_cluster(session, data.name, ClusterUpdate(**given))
        if quotas is not None:
            apply_quotas(session, data.name, quotas, str(path))
        names.append(data.name)
    return names
