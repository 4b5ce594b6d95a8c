"""Runs as the API shows them: one run with its queue place, and every listing of runs a
page at a time (``store.paging``): a cluster's queue (handed over, then waiting in start
order with each run's position and pending reason, then active), its history by end time,
and the filtered listing. Reads only; each page reads along an index, never the history."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from math import isqrt
from typing import Any, Literal

import redis
from sqlalchemy import exists, literal_column
from sqlmodel import Session, col, func, select

from protocol import pending_reasons
from protocol.workers import WorkerInfo, live_workers, workers_serving
from runyard.status import ACTIVE, TERMINAL, WAITING, RunStatus
from store import counters
from store.clusters import get_cluster
from store.db import as_utc
from store.models import Experiment, Run, RunDetails, RunProperty, RunPublic, RunTag
from store.models.tracking import VALUE_PREFIX_LENGTH
from store.paging import Key, Section, read_page, rows_after
from store.queue import (
    HANDED_OVER,
    capacity,
    capacity_of,
    pending_reason,
    position_of,
    positions,
    slots_held,
    team_position_of,
)
from store.team_status import has_quotas, team_label


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
    if serving and has_quotas(session, cluster.name):
        reason = team_reasons(session, client, cluster.name, [run])[run.id]
    return public(run, experiment, position, reason)


def team_reasons(
    session: Session, client: redis.Redis, cluster: str, waiting: Sequence[Run]
) -> dict[str, str]:
    """Why each of ``waiting`` (runs of a cluster with team quotas) waits: as the leading
    scheduler's last decision said (``protocol.pending_reasons``); for a run it did not
    look at (beyond the head of its team's queue, or submitted since), how many runs of
    its team are ahead of it (counts along ``ix_run_team_kind_queue``)."""
    reasons = pending_reasons.read(client, cluster, [r.id for r in waiting])
    for run in waiting:
        if run.id in reasons:
            continue
        ahead = team_position_of(session, run) - 1
        team = team_label(run.team)
        reasons[run.id] = (
            f"waiting behind {ahead} run(s) of {team}"
            if ahead
            else "waiting for the scheduler's next decision"
        )
    return reasons


@dataclass(frozen=True)
class RunPage:
    """A page of runs, the total where it is cheap to know (None where it would take a
    scan: tag and property filters, a cluster and an experiment together) and the cursor
    of the next page (None at the end)."""

    data: list[RunPublic]
    count: int | None
    next_cursor: str | None


# --- orders ---------------------------------------------------------------------------------

ENDED = func.coalesce(Run.completed_at, Run.failed_at, Run.canceled_at)
STARTED = func.coalesce(Run.preparing_at, Run.created_at)

QUEUE_KEYS = (
    Key(col(Run.priority), int, descending=True),
    Key(col(Run.created_at), datetime),
    Key(col(Run.id), str),
)
QUEUE_ATTRIBUTES = ("priority", "created_at", "id")
NEWEST_FIRST = (
    Key(col(Run.created_at), datetime, descending=True),
    Key(col(Run.id), str, descending=True),
)
OLDEST_FIRST = (Key(col(Run.created_at), datetime), Key(col(Run.id), str))
BY_CREATION = ("created_at", "id")


def _ended(run: Run) -> datetime | None:
    return run.completed_at or run.failed_at or run.canceled_at


def _started(run: Run) -> datetime:
    return run.preparing_at or run.created_at


def waiting_where(cluster: str, handed: bool) -> list[Any]:
    """A cluster's queued runs already handed to the broker (``handed``), or still waiting."""
    dispatched = col(Run.dispatched_at)
    return [
        Run.cluster == cluster,
        Run.status == RunStatus.QUEUED,
        dispatched.is_not(None) if handed else dispatched.is_(None),
    ]


def _cluster_sections(cluster: str, which: str) -> list[Section]:
    handed = Section(waiting_where(cluster, True), QUEUE_KEYS, QUEUE_ATTRIBUTES)
    waiting = Section(waiting_where(cluster, False), QUEUE_KEYS, QUEUE_ATTRIBUTES)
    active = Section(
        [Run.cluster == cluster, col(Run.status).in_(ACTIVE)],
        (Key(STARTED, datetime), Key(col(Run.id), str)),
        (_started, "id"),
    )
    return {"queued": [handed, waiting], "active": [active]}.get(which, [handed, waiting, active])


# --- a cluster's queue ------------------------------------------------------------------------

ClusterRuns = Literal["queued", "active", "all"]


def cluster_runs(
    session: Session,
    client: redis.Redis,
    cluster_name: str,
    which: ClusterRuns = "all",
    *,
    limit: int,
    cursor: str | None = None,
    offset: int = 0,
) -> RunPage:
    """A page of the cluster's runs: those handed to a worker, then the waiting ones in the
    order they will start (each with its position, counted from the head of the whole
    queue, and pending reason), then the active ones. The total comes from the counters."""
    cluster = get_cluster(session, cluster_name)
    page = read_page(
        session,
        f"cluster:{cluster_name}:{which}",
        Run,
        _cluster_sections(cluster_name, which),
        limit=limit,
        cursor=cursor,
        offset=offset,
    )
    runs: list[Run] = [run for _, run in page.rows]
    places = _queue_places(session, client, cluster_name, runs, cluster=cluster, consecutive=True)
    names = experiment_names(session, {r.experiment_id for r in runs})
    data = [
        public(r, names.get(r.experiment_id, ""), *places.get(r.id, (None, None))) for r in runs
    ]
    statuses: list[RunStatus] = []
    if which in ("queued", "all"):
        statuses.append(RunStatus.QUEUED)
    if which in ("active", "all"):
        statuses += sorted(ACTIVE)
    total = counters.run_total(session, cluster=cluster_name, statuses=statuses)
    return RunPage(data=data, count=total, next_cursor=page.next_cursor)


def queued_runs(session: Session, client: redis.Redis, cluster_name: str) -> list[RunPublic]:
    """Every queued run of the cluster in start order (page after page): for tests and
    small tools; a request reads one page (``cluster_runs``)."""
    found: list[RunPublic] = []
    cursor = None
    while True:
        page = cluster_runs(session, client, cluster_name, "queued", limit=500, cursor=cursor)
        found += page.data
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def queued_run_ids(session: Session, cluster_name: str, batch: int = 500) -> Iterator[list[str]]:
    """The ids of the cluster's queued runs, a batch at a time in start order (what a
    cancel of the whole queue walks: ids only, never every run at once)."""
    get_cluster(session, cluster_name)
    for handed in (True, False):
        after: list[Any] | None = None
        while True:
            runs = rows_after(
                session, Run, waiting_where(cluster_name, handed), QUEUE_KEYS, after, batch
            )
            if not runs:
                break
            yield [r.id for r in runs]
            last = runs[-1]
            after = [last.priority, as_utc(last.created_at), last.id]


def _queue_places(
    session: Session,
    client: redis.Redis,
    cluster_name: str,
    runs: Sequence[Run],
    *,
    cluster: Any = None,
    workers: list[WorkerInfo] | None = None,
    consecutive: bool = False,
) -> dict[str, tuple[int | None, str]]:
    """Position and pending reason of the queued ones among ``runs`` (all of one cluster).
    Positions count from the head of the whole queue: the first waiting one's is counted
    along the index, and each next one's by counting the waiting runs between the two
    (``store.queue.positions``), never by reading the queue's runs. Slots held are
    counted without the runs this page read as waiting: one the scheduler hands over
    meanwhile is shown waiting, never also as holding the very slot it waits for.
    ``consecutive``: the waiting ones are a run of the queue read in its order (a page of
    it), so each one's position is the one before's plus one."""
    queued = [r for r in runs if r.status == RunStatus.QUEUED and r.cluster == cluster_name]
    if not queued:
        return {}
    cluster = cluster or get_cluster(session, cluster_name)
    workers = live_workers(client) if workers is None else workers
    read_waiting = [r.id for r in queued if r.dispatched_at is None]
    held_query = slots_held(cluster_name, read_waiting)
    cap = capacity_of(cluster, workers, session.exec(held_query).one())
    serving = len(workers_serving(workers, cluster_name))
    places: dict[str, tuple[int | None, str]] = {
        r.id: (None, HANDED_OVER) for r in queued if r.dispatched_at is not None
    }
    waiting = sorted(
        (r for r in queued if r.dispatched_at is None),
        key=lambda r: (-r.priority, as_utc(r.created_at), r.id),
    )
    if not waiting:
        return places
    if consecutive:
        first = waiting[0]
        position = position_of(session, first)
        for offset, run in enumerate(waiting):
            places[run.id] = (
                position + offset,
                pending_reason(cluster, cap, serving, position + offset),
            )
    else:
        for run_id, position in positions(session, cluster_name, waiting).items():
            places[run_id] = (position, pending_reason(cluster, cap, serving, position))
    if serving and has_quotas(session, cluster_name):
        for run_id, reason in team_reasons(session, client, cluster_name, waiting).items():
            places[run_id] = (places[run_id][0], reason)
    return places


def queue_places(
    session: Session, client: redis.Redis, runs: Sequence[Run]
) -> dict[str, tuple[int | None, str]]:
    """Position and pending reason of the waiting ones among ``runs``, per cluster."""
    clusters = sorted({r.cluster for r in runs if r.status in WAITING and r.cluster})
    if not clusters:
        return {}
    workers = live_workers(client)
    places: dict[str, tuple[int | None, str]] = {}
    for name in clusters:
        mine = [r for r in runs if r.cluster == name]
        places.update(_queue_places(session, client, name, mine, workers=workers))
    return places


def cluster_history(
    session: Session,
    cluster_name: str,
    *,
    limit: int,
    cursor: str | None = None,
    offset: int = 0,
) -> RunPage:
    """The cluster's ended runs, the latest ending first: what it did lately (a page)."""
    get_cluster(session, cluster_name)
    section = Section(
        [Run.cluster == cluster_name, ENDED.is_not(None)],
        (Key(ENDED, datetime, descending=True), Key(col(Run.id), str, descending=True)),
        (_ended, "id"),
    )
    page = read_page(
        session,
        f"history:{cluster_name}",
        Run,
        [section],
        limit=limit,
        cursor=cursor,
        offset=offset,
    )
    runs = [run for _, run in page.rows]
    total = counters.run_total(session, cluster=cluster_name, statuses=TERMINAL)
    return RunPage(data=public_runs(session, runs), count=total, next_cursor=page.next_cursor)


# --- every run, filtered ----------------------------------------------------------------------


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
    cursor: str | None = None,
    offset: int = 0,
    client: redis.Redis | None = None,
) -> RunPage:
    """A page of the runs matching every filter: newest first, a run's children in the
    order they were made. ``tags`` / ``properties``: each key must be set, to the given
    value unless that is None (Azure's ``get_runs(tags=...)``). With ``client``, waiting
    runs carry their queue position and pending reason."""
    where: list[Any] = []
    experiment_id: int | None = None
    if cluster is not None:
        get_cluster(session, cluster)
        where.append(Run.cluster == cluster)
    if experiment is not None:
        experiment_id = session.exec(
            select(Experiment.id).where(Experiment.name == experiment)
        ).first()
        if experiment_id is None:
            return RunPage(data=[], count=0, next_cursor=None)
        where.append(Run.experiment_id == experiment_id)
    if parent is not None:
        where.append(Run.parent_run_id == parent)
    if top_level:
        where.append(col(Run.parent_run_id).is_(None))
    if statuses:
        where.append(col(Run.status).in_(statuses))
    where += key_filters(session, tags or {}, properties or {})
    keys = OLDEST_FIRST if parent else NEWEST_FIRST
    page = read_page(
        session,
        "runs",
        Run,
        [Section(where, keys, BY_CREATION)],
        limit=limit,
        cursor=cursor,
        offset=offset,
    )
    runs = [run for _, run in page.rows]
    places = queue_places(session, client, runs) if client is not None else {}
    names = experiment_names(session, {r.experiment_id for r in runs})
    data = [
        public(r, names.get(r.experiment_id, ""), *places.get(r.id, (None, None))) for r in runs
    ]
    total = _total(
        session,
        cluster=cluster,
        experiment_id=experiment_id,
        parent=parent,
        statuses=statuses,
        top_level=top_level,
        filtered=bool(tags or properties),
    )
    return RunPage(data=data, count=total, next_cursor=page.next_cursor)


def _key_match(table: Any, key: str, value: str | None, exact: bool = True) -> list[Any]:
    """``table`` (tags or properties) rows of ``key`` set to ``value`` (any value for
    None), along its key/value index (key, first 200 characters of the value, run).
    ``exact`` False: the prefix only, read inside the index (an upper bound)."""
    found = [table.key == key]
    if value is not None:
        prefix = literal_column(f"substr({table.__tablename__}.value, 1, {VALUE_PREFIX_LENGTH})")
        found.append(prefix == value[:VALUE_PREFIX_LENGTH])
        if exact:
            # ``|| ''``: SQLite would otherwise fold ``value = ?`` into the prefix term
            # above and no longer see that it matches the index.
            found.append(table.value.concat("") == value)
    return found


def key_filters(
    session: Session, tags: dict[str, str | None], properties: dict[str, str | None]
) -> list[Any]:
    """Conditions for tag and property filters. A page is newest first, along a run index;
    each filter is either probed per run read (EXISTS on the table's primary key), or, for
    the rarest one when it is rare enough, the source of the runs (their ids from the
    key/value index, sorted by the run's order). Rare means at most ``sqrt(100 * runs)``
    rows: walking newest first then finds a page within about that many runs, and sorting
    the rare ones costs no more, so either way a page costs about the square root of the
    history, never all of it. Each filter's size is counted inside the index, up to that
    bound."""
    filters = [
        (table, key, value)
        for table, wanted in ((RunTag, tags), (RunProperty, properties))
        for key, value in wanted.items()
    ]
    if not filters:
        return []
    bound = max(1_000, isqrt(100 * counters.run_total(session)))
    sizes = []
    for table, key, value in filters:
        within = (
            select(table.run_id).where(*_key_match(table, key, value, exact=False)).limit(bound + 1)
        )
        sizes.append(session.exec(select(func.count()).select_from(within.subquery())).one())
    rarest = min(range(len(filters)), key=sizes.__getitem__)
    where: list[Any] = []
    for index, (table, key, value) in enumerate(filters):
        match = _key_match(table, key, value)
        if index == rarest and sizes[index] <= bound:
            where.append(col(Run.id).in_(select(table.run_id).where(*match)))
        else:
            where.append(exists().where(table.run_id == Run.id, *match))
    return where


def _total(
    session: Session,
    *,
    cluster: str | None,
    experiment_id: int | None,
    parent: str | None,
    statuses: Sequence[RunStatus] | None,
    top_level: bool,
    filtered: bool,
) -> int | None:
    """How many runs match, where the counters (or one run's children) tell it cheaply;
    None where only a scan would (tags, properties, a cluster and an experiment both)."""
    if filtered or (cluster is not None and experiment_id is not None):
        return None
    if parent is not None:
        query = select(func.count()).select_from(Run).where(Run.parent_run_id == parent)
        if statuses:
            query = query.where(col(Run.status).in_(statuses))
        return (
            None if cluster is not None or experiment_id is not None else session.exec(query).one()
        )
    top = True if top_level else None
    if experiment_id is not None:
        return counters.experiment_total(
            session, experiment_id, statuses=statuses or None, top_level=top
        )
    return counters.run_total(session, cluster=cluster, statuses=statuses or None, top_level=top)
