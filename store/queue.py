"""The queue as the database holds it: order, slots held, capacity, each waiting run's
place and the reason it has not started. Read by the API's listings and by admission."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, literal, text, tuple_
from sqlmodel import Session, col, func, select

from protocol.workers import WorkerInfo, workers_serving
from runyard.status import ACTIVE, RunStatus
from store.db import as_utc
from store.models import Cluster, Run


@dataclass(frozen=True)
class Capacity:
    nodes: int
    worker_slots: int
    busy: int

    @property
    def limit(self) -> int:
        return min(self.nodes, self.worker_slots)

    @property
    def free(self) -> int:
        return max(self.limit - self.busy, 0)


def queue_order() -> tuple:
    return (col(Run.priority).desc(), col(Run.created_at), col(Run.id))


def handed_to_broker() -> ColumnElement[bool]:
    """Queued runs already handed to the broker: a worker is about to claim them."""
    return (Run.status == RunStatus.QUEUED) & col(Run.dispatched_at).is_not(None)


def holding_a_slot() -> ColumnElement[bool]:
    """The one definition of a run that holds a slot of its cluster: an active one (a
    NotResponding run may still be running on a node we cannot hear: it keeps its slot),
    or a queued one already handed to the broker. A condition, for any query to use."""
    return col(Run.status).in_(ACTIVE) | handed_to_broker()


def slots_held(cluster_name: str, besides: Sequence[str] = ()) -> Select:
    """How many of the cluster's runs hold a slot (``holding_a_slot``), leaving out the
    runs ``besides``. A count query, so it can stand alone or inside another read: the
    sum of two counts, each a range of the queue index (active statuses; queued and
    handed over), so it never reads the cluster's history."""

    def count(*where: ColumnElement[bool]) -> ColumnElement[int]:
        query = select(func.count()).where(Run.cluster == cluster_name, *where)
        if besides:
            query = query.where(col(Run.id).not_in(list(besides)))
        return query.scalar_subquery()

    active = count(col(Run.status).in_(ACTIVE))
    handed = count(handed_to_broker())
    return select(active + handed)


def capacity(
    session: Session, cluster: Cluster, workers: list[WorkerInfo], besides: str | None = None
) -> Capacity:
    """The cluster's slots and how many are taken, leaving out the run ``besides``: one a
    caller read as waiting. The scheduler may hand it to a worker between the caller's
    read and this count; counted then, it would hold the very slot it waits for ("all 1
    node(s) busy" on an idle cluster). A whole queue is read with its count in one
    statement instead (``store.runs``), so no list of ids is ever needed."""
    holding = slots_held(cluster.name, () if besides is None else (besides,))
    return capacity_of(cluster, workers, session.exec(holding).one())


def capacity_of(cluster: Cluster, workers: list[WorkerInfo], held: int) -> Capacity:
    """The cluster's capacity, given how many of its runs hold a slot (``slots_held``)."""
    slots = sum(w.slots for w in workers_serving(workers, cluster.name))
    # Runs a draining worker finishes hold its own (withdrawn) slots, not the others'.
    draining = [w for w in workers_serving(workers, cluster.name, draining=True) if w.draining]
    busy = max(held - sum(w.busy for w in draining), 0)
    return Capacity(nodes=cluster.nodes, worker_slots=slots, busy=busy)


def waiting_runs(session: Session, cluster: str, limit: int | None = None) -> list[Run]:
    """Queued runs not yet handed to the broker, in the order they will start."""
    query = (
        select(Run)
        .where(
            Run.cluster == cluster,
            Run.status == RunStatus.QUEUED,
            col(Run.dispatched_at).is_(None),
        )
        .order_by(*queue_order())
    )
    if limit is not None:
        query = query.limit(limit)
    return list(session.exec(query))


def position_of(session: Session, run: Run) -> int:
    """1-based place of a waiting run in its cluster's queue: two counts, each a range of
    the queue index (higher priorities; the same priority, submitted before it)."""
    return _place_among(session, run, _waiting_in(run.cluster or ""))


def _place_among(session: Session, run: Run, waiting: tuple[ColumnElement[bool], ...]) -> int:
    """1-based place of ``run`` among the runs ``waiting`` selects, in queue order."""
    higher = select(func.count()).where(*waiting, col(Run.priority) > run.priority)
    same = select(func.count()).where(
        *waiting,
        Run.priority == run.priority,
        tuple_(col(Run.created_at), col(Run.id))
        < tuple_(literal(run.created_at, col(Run.created_at).type), literal(run.id)),
    )
    return session.exec(higher).one() + session.exec(same).one() + 1


def _waiting_in(cluster: str) -> tuple[ColumnElement[bool], ...]:
    return (
        Run.cluster == cluster,
        Run.status == RunStatus.QUEUED,
        col(Run.dispatched_at).is_(None),
    )


def _gap_sql(before: Run, run: Run, mark: str) -> tuple[str, list[Any]]:
    """SQL counting the waiting runs after ``before`` up to ``run`` itself (``before``
    ahead of ``run`` in the queue), with its parameters after the cluster's: at most three
    ranges of the queue index (the rest of ``before``'s priority, the priorities between,
    ``run``'s priority up to it), so the cost is the span between the two, read inside the
    covering index ``ix_run_queue``. ``mark`` is the driver's parameter placeholder."""
    waiting = f"cluster = {mark} AND status = {mark} AND dispatched_at IS NULL"

    def count(where: str) -> str:
        return f"(SELECT count(*) FROM run WHERE {waiting} AND {where})"

    after = f"(created_at, id) > ({mark}, {mark})"
    upto = f"(created_at, id) <= ({mark}, {mark})"
    if before.priority == run.priority:
        sql = count(f"priority = {mark} AND {after} AND {upto}")
        return sql, [[before.priority, before.created_at, before.id, run.created_at, run.id]]
    sql = " + ".join(
        (
            count(f"priority = {mark} AND {after}"),
            count(f"priority < {mark} AND priority > {mark}"),
            count(f"priority = {mark} AND {upto}"),
        )
    )
    ranges = [
        [before.priority, before.created_at, before.id],
        [before.priority, run.priority],
        [run.priority, run.created_at, run.id],
    ]
    return sql, ranges


def positions(session: Session, cluster: str, waiting: Sequence[Run]) -> dict[str, int]:
    """1-based queue places of ``waiting`` (runs of ``cluster`` not yet handed over, in
    any order and spread anywhere in the queue): the first one's by ``position_of``, each
    next one's as the one before's plus the waiting runs between them, every gap counted
    in one statement. Never reads the queue's runs into Python: a page of runs spread over
    a 10,000-run queue costs index-range counts spanning it. Plain driver SQL, since
    building (or even parsing) a hundred ORM subqueries per page cost more than running
    them."""
    if not waiting:
        return {}
    ordered = sorted(waiting, key=lambda r: (-r.priority, as_utc(r.created_at), r.id))
    first = ordered[0]
    found = {first.id: position_of(session, first)}
    if len(ordered) == 1:
        return found
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name == "postgresql":
        counted = _postgres_gaps(connection, cluster, ordered)
    else:
        counted = _gaps(connection, cluster, ordered)
    position = found[first.id]
    for run, gap in zip(ordered[1:], counted, strict=True):
        position += gap
        found[run.id] = position
    return found


def _gaps(connection: Any, cluster: str, ordered: Sequence[Run]) -> Sequence[int]:
    """The waiting runs between each two of ``ordered`` (in queue order), up to the later
    one: one scalar subquery per gap in one statement (SQLite plans that in no time)."""
    dialect = connection.dialect
    stamp = col(Run.created_at).type.bind_processor(dialect) or (lambda value: value)
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    gaps: list[str] = []
    params: list[Any] = []
    for before, run in pairwise(ordered):
        sql, ranges = _gap_sql(before, run, mark)
        gaps.append(sql)
        for values in ranges:
            params += [cluster, RunStatus.QUEUED.value]
            params += [stamp(v) if isinstance(v, datetime) else v for v in values]
    return connection.exec_driver_sql("SELECT " + ", ".join(gaps), tuple(params)).one()


_WAITING = "cluster = %(cluster)s AND status = %(queued)s AND dispatched_at IS NULL"
_POSTGRES_GAPS = f"""
SELECT (SELECT count(*) FROM run WHERE {_WAITING} AND priority = g.ap
            AND (created_at, id) > (g.ac, g.ai) AND (created_at, id) <= (g.uc, g.ui))
     + (SELECT count(*) FROM run WHERE {_WAITING} AND priority < g.ap AND priority > g.bp)
     + (SELECT count(*) FROM run WHERE {_WAITING} AND priority = g.tp
            AND (created_at, id) <= (g.bc, g.bi))
FROM unnest(%(ap)s::int[], %(ac)s::timestamptz[], %(ai)s::text[], %(uc)s::timestamptz[],
            %(ui)s::text[], %(bp)s::int[], %(tp)s::int[], %(bc)s::timestamptz[], %(bi)s::text[])
     WITH ORDINALITY AS g(ap, ac, ai, uc, ui, bp, tp, bc, bi, n)
ORDER BY g.n"""


def _postgres_gaps(connection: Any, cluster: str, ordered: Sequence[Run]) -> list[int]:
    """As ``_gaps``, as one statement over arrays (the gaps' bounds) on PostgreSQL, which
    would otherwise plan a hundred subqueries per page. Each gap is the same three ranges
    of ``ix_run_queue``: for runs of one priority the first range ends at the later run
    and the third is none (priority NULL); across priorities the first runs to the end
    of its priority (a bound of infinity)."""
    columns: dict[str, list[Any]] = {k: [] for k in ("ap", "ac", "ai", "uc", "ui")}
    columns.update({k: [] for k in ("bp", "tp", "bc", "bi")})
    for before, run in pairwise(ordered):
        same = before.priority == run.priority
        after, upto = as_utc(before.created_at).isoformat(), as_utc(run.created_at).isoformat()
        for key, value in (
            ("ap", before.priority),
            ("ac", after),
            ("ai", before.id),
            ("uc", upto if same else "infinity"),
            ("ui", run.id if same else ""),
            ("bp", run.priority),
            ("tp", None if same else run.priority),
            ("bc", upto),
            ("bi", run.id),
        ):
            columns[key].append(value)
    params = {"cluster": cluster, "queued": RunStatus.QUEUED.value, **columns}
    return [row[0] for row in connection.exec_driver_sql(_POSTGRES_GAPS, params)]


def pending_reason(cluster: Cluster, cap: Capacity, serving: int, position: int) -> str:
    """Why the run at ``position`` has not started yet."""
    if serving == 0:
        return f"no worker serves cluster {cluster.name}"
    if position <= cap.free:
        return "about to start"
    if cap.worker_slots < cap.nodes:
        busy = f"all {cap.limit} worker slot(s) busy (node limit {cap.nodes})"
    else:
        busy = f"all {cap.nodes} node(s) busy"
    ahead = position - 1 - cap.free
    return busy if ahead <= 0 else f"waiting behind {ahead} run(s); {busy}"


HANDED_OVER = "handed to a worker; starting"


def annotate_queue(
    runs: list[Run], cluster: Cluster, cap: Capacity, workers: list[WorkerInfo]
) -> list[tuple[Run, int | None, str]]:
    """Position and pending reason of each queued run, in queue order."""
    serving = len(workers_serving(workers, cluster.name))
    annotated: list[tuple[Run, int | None, str]] = []
    position = 0
    for run in runs:
        if run.dispatched_at is not None:
            annotated.append((run, None, HANDED_OVER))
            continue
        position += 1
        annotated.append((run, position, pending_reason(cluster, cap, serving, position)))
    return annotated


# --- the queue per team (clusters with team quotas: ``scheduler.admission``) ----------------


@dataclass(frozen=True)
class SlotHolder:
    """A run holding a slot of its cluster, as the team scheduler needs to know it."""

    id: str
    team: str | None
    priority: int
    started: datetime  # its attempt's hand-over to a worker
    preemptible: bool
    preempting: bool  # already asked to give its slot back
    preemption_reason: str | None
    attempt: int
    status: RunStatus  # Queued: handed to the broker, no worker has it yet


def slot_holders(session: Session, cluster: str) -> list[SlotHolder]:
    """The cluster's runs holding a slot (``holding_a_slot``): two ranges of the queue
    index, as ``slots_held`` counts them, so it never reads the cluster's history."""
    columns = (
        Run.id,
        Run.team,
        Run.priority,
        Run.dispatched_at,
        Run.preparing_at,
        Run.created_at,
        Run.preemptible,
        Run.preempt_requested_at,
        Run.preemption_reason,
        Run.attempt,
        Run.status,
    )
    found: list[SlotHolder] = []
    for where in (col(Run.status).in_(ACTIVE), handed_to_broker()):
        for row in session.exec(select(*columns).where(Run.cluster == cluster, where)):
            found.append(
                SlotHolder(
                    id=row.id,
                    team=row.team,
                    priority=row.priority,
                    started=as_utc(row.dispatched_at or row.preparing_at or row.created_at),
                    preemptible=bool(row.preemptible),
                    preempting=row.preempt_requested_at is not None,
                    preemption_reason=row.preemption_reason,
                    attempt=row.attempt,
                    status=RunStatus(row.status),
                )
            )
    return found


def _team_is(team: str | None) -> ColumnElement[bool]:
    return col(Run.team).is_(None) if team is None else Run.team == team


_QUEUE_TEAMS = text(
    """
WITH RECURSIVE teams(team) AS (
    SELECT min(team) FROM run WHERE cluster = :cluster
    UNION ALL
    SELECT (SELECT min(r.team) FROM run r WHERE r.cluster = :cluster AND r.team > teams.team)
    FROM teams WHERE teams.team IS NOT NULL
)
SELECT team FROM teams WHERE team IS NOT NULL"""
)


def queue_teams(session: Session, cluster: str) -> list[str]:
    """Every team any run of the cluster was charged to (runs of no team aside): a loose
    scan of ``ix_run_team_kind_queue``, one probe per team, however many runs each has. A
    team whose record went while its runs wait is found too."""
    return [team for (team,) in session.execute(_QUEUE_TEAMS, {"cluster": cluster})]


class WaitingRun(NamedTuple):
    """A waiting run as the team scheduler ranks it: only the columns it needs, so
    reading the head of every team's queue never loads whole run records."""

    id: str
    team: str | None
    priority: int
    submitted: float  # created_at, epoch seconds
    preemptible: bool


@dataclass(frozen=True)
class TeamQueue:
    """One team's waiting runs of one kind (preemptible or not) on a cluster, as
    ``scheduler.queue_head`` reads them: along ``ix_run_team_kind_queue``, which holds
    them by priority (ascending: each next priority down is one probe), then submit time,
    so the head costs a few index ranges whatever the queue's length. ``team`` None: runs
    of no team."""

    session: Session
    cluster: str
    team: str | None
    preemptible: bool

    def _waiting(self) -> tuple[ColumnElement[bool], ...]:
        return (
            *_waiting_in(self.cluster),
            _team_is(self.team),
            Run.preemptible == self.preemptible,
        )

    def priorities(self) -> Iterator[int]:
        below = None
        while True:
            top = select(func.max(Run.priority)).where(*self._waiting())
            if below is not None:
                top = top.where(col(Run.priority) < below)
            below = self.session.exec(top).one()
            if below is None:
                return
            yield below

    def oldest(self) -> float | None:
        # Per priority, in the index's own order: a plain min() lets SQLite walk another
        # index (every waiting run's, by submit time) to the first of this queue's.
        firsts = self.session.exec(
            select(func.min(Run.created_at))
            .where(*self._waiting())
            .group_by(col(Run.priority))
            .order_by(col(Run.priority))
        )
        return min((as_utc(first).timestamp() for first in firsts), default=None)

    def first(self, priority: int, count: int) -> list[tuple[float, str, WaitingRun]]:
        rows = self.session.exec(
            select(Run.id, Run.created_at)
            .where(*self._waiting(), Run.priority == priority)
            .order_by(col(Run.created_at), col(Run.id))
            .limit(count)
        )
        found = []
        for run_id, created_at in rows:
            submitted = as_utc(created_at).timestamp()
            run = WaitingRun(run_id, self.team, priority, submitted, self.preemptible)
            found.append((submitted, run_id, run))
        return found


def team_position_of(session: Session, run: Run) -> int:
    """1-based place of a waiting run in its team's own queue on its cluster: for each
    kind (preemptible or not) two counts, each a range of ``ix_run_team_kind_queue`` (as
    ``position_of`` on the whole queue)."""
    team = (*_waiting_in(run.cluster or ""), _team_is(run.team))
    ahead = sum(
        _place_among(session, run, (*team, Run.preemptible == kind)) - 1 for kind in (False, True)
    )
    return ahead + 1
