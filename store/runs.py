"""Runs: submit, read, list per cluster, cancel. Services take a session and never commit it;
what other processes must hear of a change goes into the caller's ``Announcements``."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import redis
from sqlalchemy import insert, update
from sqlmodel import Session, col, func, select

from protocol import control
from protocol.environments import merge_environments
from protocol.limits import MAX_PRIORITY
from runyard.errors import Conflict, IllegalTransition, RunFinished, RunNotFound, RunyardError
from runyard.status import TERMINAL, TIMESTAMP_FIELD, WAITING, RunStatus
from store import attempts, run_listings
from store.announcements import Announcements
from store.clusters import (
    check_image,
    check_isolation,
    resolve_cluster,
)
from store.db import insert_ignoring
from store.lifecycle import chunks, end_children, transition, transition_many
from store.models import (
    CancelResult,
    Cluster,
    Experiment,
    Run,
    RunArraySpec,
    RunSpec,
    RunTag,
    utcnow,
)
from store.run_tree import child_refusal


def new_run_id(experiment: str) -> str:
    """Azure-style ids: ``<experiment>_<unix seconds>_<8 hex>``."""
    return f"{experiment}_{int(time.time())}_{secrets.token_hex(4)}"


def get_or_create_experiment(session: Session, name: str) -> Experiment:
    """Safe when two first submits to a new experiment race (insert-or-ignore, then read)."""
    experiment = session.exec(select(Experiment).where(Experiment.name == name)).first()
    if experiment is None:
        session.execute(
            insert_ignoring(session, Experiment)
            .values(name=name, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        experiment = session.exec(select(Experiment).where(Experiment.name == name)).one()
    return experiment


def check_submittable(session: Session, spec: RunSpec) -> RunSpec:
    """Everything a submit needs that the spec alone cannot prove (raises before any write);
    returns the spec with its cluster resolved (no name: the default cluster)."""
    cluster = check_placement(session, spec.cluster, spec.environment)
    if spec.parent_run_id is not None:
        check_child_budget(session, spec.parent_run_id)
    return spec.model_copy(update={"cluster": cluster.name})


def check_placement(
    session: Session, cluster_name: str | None, environment: dict[str, Any]
) -> Cluster:
    """The cluster a run in ``environment`` goes to (no name: the default cluster), once it
    is known the cluster can run it there."""
    cluster = resolve_cluster(session, cluster_name)
    merged = merge_environments(cluster.environment or {}, environment)
    check_isolation(cluster, merged)
    check_image(cluster, merged)
    return cluster


def check_child_budget(session: Session, parent_id: str) -> None:
    refusal = child_refusal(session, get_run(session, parent_id))
    if refusal is not None:
        raise Conflict(refusal)


def _root_of(session: Session, parent_id: str | None) -> str | None:
    if parent_id is None:
        return None
    parent = get_run(session, parent_id)
    return parent.root_run_id or parent.id


def _spec_fields(spec: RunSpec, snapshot_digest: str) -> dict[str, Any]:
    """The run columns a submitted spec sets, alike for a single run and each run of an
    array (an array's own arguments, parent and root are set per run, or not at all)."""
    return {
        "cluster": spec.cluster,
        "priority": spec.priority,
        "script": spec.script,
        "environment": spec.environment,
        "snapshot_digest": snapshot_digest,
        "display_name": spec.display_name,
        "max_run_duration_seconds": spec.max_run_duration_seconds,
    }


def _new_run(
    experiment: Experiment,
    submitted_by: str | None,
    run_id: str,
    status: RunStatus = RunStatus.QUEUED,
    **fields: Any,
) -> Run:
    """A new run of ``experiment``, in ``status`` since now (Queued: a submit; Running: an
    interactive run), with ``fields`` (checked by the caller)."""
    now = utcnow()
    stamps = {"created_at": now, "not_started_at": now, TIMESTAMP_FIELD[status]: now}
    return Run(
        id=run_id,
        experiment_id=experiment.id,  # type: ignore[arg-type]
        status=status,
        submitted_by=submitted_by,
        **stamps,
        **fields,
    )


def submit(session: Session, spec: RunSpec, snapshot_digest: str, submitted_by: str | None) -> Run:
    spec = check_submittable(session, spec)
    run = queue_run(
        session,
        spec.experiment,
        submitted_by,
        **_spec_fields(spec, snapshot_digest),
        arguments=spec.arguments,
        parent_run_id=spec.parent_run_id,
        root_run_id=_root_of(session, spec.parent_run_id),
    )
    for key, value in spec.tags.items():
        session.add(RunTag(run_id=run.id, key=key, value=value))
    session.flush()
    return run


def submit_array(
    session: Session, spec: RunArraySpec, snapshot_digest: str, submitted_by: str | None
) -> tuple[str, str, list[str]]:
    """Queue one run per argument list, all alike but for their arguments, in one insert
    (not a round trip per run). The spec is checked as a single submit's is, once, before
    anything is written; the caller commits (all or nothing). Returns the array id, the
    cluster, and the run ids in index order: run i is ``<array id>_<i>`` (i zero-padded)."""
    spec = check_submittable(session, spec)  # type: ignore[assignment]
    assert spec.cluster is not None  # check_submittable resolves it
    record = get_or_create_experiment(session, spec.experiment)
    array_id = new_run_id(spec.experiment)
    # Every column as a single submit would set it (the model's defaults included), once.
    fields = _spec_fields(spec, snapshot_digest)
    template = _new_run(record, submitted_by, array_id, **fields, array_id=array_id).model_dump()
    # Zero-padded: one array's runs share their submit time, so the queue (priority, then
    # submit time, then id) takes them in index order only if their ids sort that way.
    width = len(str(len(spec.arguments_list) - 1))
    ids = [f"{array_id}_{index:0{width}d}" for index in range(len(spec.arguments_list))]
    rows = [
        {**template, "id": run_id, "arguments": arguments, "array_index": index}
        for index, (run_id, arguments) in enumerate(zip(ids, spec.arguments_list, strict=True))
    ]
    insert_rows(session, Run, rows)
    if spec.tags:
        tags = [
            {"run_id": run_id, "key": key, "value": value}
            for run_id in ids
            for key, value in spec.tags.items()
        ]
        insert_rows(session, RunTag, tags)
    return array_id, spec.cluster, ids


def insert_rows(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` a few hundred to a statement (multi-row VALUES), never one by one
    (``store.lifecycle.ROWS_PER_STATEMENT`` says why)."""
    for chunk in chunks(rows):
        session.execute(insert(table).values(list(chunk)))


def queue_run(session: Session, experiment: str, submitted_by: str | None, **fields: Any) -> Run:
    """A new run of ``experiment`` (made on first use), Queued now, with ``fields`` (the
    caller has checked them)."""
    record = get_or_create_experiment(session, experiment)
    run = _new_run(record, submitted_by, new_run_id(experiment), **fields)
    session.add(run)
    session.flush()
    return run


def start_interactive(
    session: Session,
    experiment: str,
    display_name: str | None,
    submitted_by: str | None,
    issued_by_token: str | None = None,
) -> Run:
    """``Experiment.start_logging()``: a run with no cluster and no worker, Running at once;
    it ends when its client calls complete() or fail()."""
    record = get_or_create_experiment(session, experiment)
    run = _new_run(
        record,
        submitted_by,
        new_run_id(experiment),
        RunStatus.RUNNING,
        display_name=display_name,
        issued_by_token=issued_by_token,
    )
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    return run


def record_environment_used(session: Session, run_id: str, environment: dict[str, Any]) -> None:
    """What the run's worker ran it with (a checked ``protocol.environment_used`` report),
    replacing what an earlier attempt reported."""
    session.execute(update(Run).where(col(Run.id) == run_id).values(environment_used=environment))


def cancel(session: Session, client: redis.Redis, run_id: str) -> Run:
    """Cancel a run: a waiting one ends at once and never starts; a running one is asked
    to stop and ends Canceled when its worker has stopped it."""
    run = get_run(session, run_id)
    if run.status.is_terminal:
        raise RunFinished(f"run {run_id} has already ended ({run.status.value}); nothing to cancel")
    if run.status == RunStatus.CANCEL_REQUESTED:
        return run
    if run.dispatched_at is None and run.status not in WAITING:
        # A child or an interactive run: no worker holds it, so it ends here and now.
        ended = transition(session, run_id, RunStatus.CANCELED)
        end_children(session, run_id, RunStatus.CANCELED)
        return ended
    claimed = control.mark_canceled(client, run_id, run.attempt)
    if run.status in WAITING and not claimed:
        # The cancel mark landed before any worker claimed it: no worker will ever start it.
        return transition(session, run_id, RunStatus.CANCELED)
    if run.status == RunStatus.NOT_RESPONDING:
        # Its worker is silent; nobody else will report the end, so record it now.
        ended = transition(session, run_id, RunStatus.CANCELED)
        end_children(session, run_id, RunStatus.CANCELED)
        attempts.close_open_attempt(session, ended, utcnow(), attempts.CANCELED)
        return ended
    try:
        return transition(session, run_id, RunStatus.CANCEL_REQUESTED)
    except IllegalTransition:
        # A worker claimed it while we looked, and the first state it reported was not yet
        # ingested; the worker sees the mark and stops it.
        refreshed = get_run(session, run_id)
        if refreshed.status.is_terminal:
            raise
        return refreshed


def fail(session: Session, client: redis.Redis, run_id: str, reason: str) -> Run:
    """``run.fail()`` from outside the run: it ends Failed now, with ``reason``; a worker
    holding it (or about to start it) sees the cancel mark and stops its process."""
    run = get_run(session, run_id)
    if run.status.is_terminal:
        raise RunFinished(f"run {run_id} has already ended ({run.status.value}); nothing to fail")
    if run.dispatched_at is not None or run.status in WAITING:
        control.mark_canceled(client, run_id, run.attempt)
    ended = transition(session, run_id, RunStatus.FAILED, failure_reason=reason)
    end_children(session, run_id, RunStatus.FAILED)
    # Its worker's later report is refused (the run has ended): the slot is counted as
    # released now, when the run ended.
    attempts.close_open_attempt(session, ended, utcnow(), attempts.FAILED)
    return ended


def cancel_with_children(
    session: Session, client: redis.Redis, run_id: str, news: Announcements
) -> Run:
    """``run.cancel()`` from outside the run: ``cancel``, and the runs it submitted go with
    it. What changed is added to ``news``, for the caller to send once it has committed."""
    end = partial(cancel, session, client, run_id)
    return _end_from_outside(session, client, run_id, end, news)


def fail_with_children(
    session: Session, client: redis.Redis, run_id: str, reason: str, news: Announcements
) -> Run:
    """``run.fail()`` from outside the run: ``fail``, and the runs it submitted are cancelled."""
    end = partial(fail, session, client, run_id, reason)
    return _end_from_outside(session, client, run_id, end, news)


def _end_from_outside(
    session: Session,
    client: redis.Redis,
    run_id: str,
    end: Callable[[], Run],
    news: Announcements,
    ended: set[str] | None = None,
) -> Run:
    """Run ``end`` (a cancel or a fail), then cancel the runs it submitted. Live followers
    of each run that changed, and the scheduler (when a slot freed), are told through
    ``news``. ``ended`` collects the ids of those children."""
    before = get_run(session, run_id).status
    run = end()
    children = cancel_submitted_children(session, client, run_id)
    if ended is not None:
        ended.update(r.id for r, _ in children)
    _tell([(run, before), *children], news)
    return run


def _tell(changed: list[tuple[Run, RunStatus]], news: Announcements) -> None:
    """Live followers of each run that changed hear of it; the scheduler, of each slot freed."""
    for r, was in changed:
        if r.status != was:
            news.status(r.id, r.status)
        if r.status.is_terminal and r.cluster:
            news.wake(r.cluster)


def cancel_submitted_children(
    session: Session, client: redis.Redis, run_id: str
) -> list[tuple[Run, RunStatus]]:
    """A run ended from outside takes the runs it submitted (``submit_child``) with it:
    they run for it. (Its in-process children end with it in ``end_children``; a parent
    that ends by itself leaves its submitted children to finish.) Returns each child
    changed, with the status it had."""
    changed: list[tuple[Run, RunStatus]] = []
    children = session.exec(
        select(Run).where(
            Run.parent_run_id == run_id,
            col(Run.status).not_in(TERMINAL),
            col(Run.snapshot_digest).is_not(None),
        )
    )
    for child in list(children):
        before = child.status
        try:
            changed.append((cancel(session, client, child.id), before))
        except Conflict:
            continue  # it ended, or changed hands, while we looked: its own end stands
        changed.extend(cancel_submitted_children(session, client, child.id))
    return changed


def cancel_many(
    session: Session, client: redis.Redis, run_ids: list[str], news: Announcements
) -> list[CancelResult]:
    """Cancel each run on its own; a run that cannot be cancelled reports why (a refused
    cancel writes nothing, so the others stand). A run already cancelled with its parent,
    earlier in this call, counts as cancelled.

    Waiting runs, what a bulk cancel mostly meets (a queue, a job array), end together:
    ``cancel_waiting``, a few statements per ``ROWS_PER_STATEMENT`` runs. The rest, and
    any waiting run that changed meanwhile, take ``cancel``'s path one by one."""
    results = []
    ended: set[str] = set()
    for chunk in chunks(run_ids):
        together = cancel_waiting(session, client, chunk, news, ended)
        for run_id in chunk:
            if run_id in together:
                together.discard(run_id)  # named twice: the second time it has ended
                results.append(CancelResult(id=run_id, status=RunStatus.CANCELED))
                continue
            if run_id in ended:
                results.append(CancelResult(id=run_id, status=get_run(session, run_id).status))
                continue
            try:
                cancel_now = partial(cancel, session, client, run_id)
                run = _end_from_outside(session, client, run_id, cancel_now, news, ended)
                results.append(CancelResult(id=run_id, status=run.status))
            except RunyardError as exc:
                results.append(CancelResult(id=run_id, error=exc.message))
    return results


def cancel_waiting(
    session: Session,
    client: redis.Redis,
    run_ids: Sequence[str],
    news: Announcements,
    ended: set[str] | None = None,
) -> set[str]:
    """``cancel`` of the waiting runs among ``run_ids`` (at most ``ROWS_PER_STATEMENT``),
    set-based: their cancel marks in one Redis round trip, then one conditional UPDATE per
    status and attempt they were read with. As in ``cancel``, the mark lands first, so a
    worker can no longer start a run that was not claimed yet; one that was claimed, or
    that moved between the read and the UPDATE (admitted again, started, ended), is not
    touched here: returned without it, it takes ``cancel``'s path. Returns the ids it
    ended Canceled; their submitted children go with them, as ``cancel_many``'s do."""
    rows = session.exec(
        select(Run.id, Run.status, Run.attempt).where(
            col(Run.id).in_(run_ids), col(Run.status).in_(WAITING)
        )
    ).all()
    claimed = control.mark_canceled_many(client, [(run_id, attempt) for run_id, _, attempt in rows])
    groups: dict[tuple[RunStatus, int], list[str]] = {}
    for (run_id, status, attempt), taken in zip(rows, claimed, strict=True):
        if not taken:
            groups.setdefault((RunStatus(status), attempt), []).append(run_id)
    canceled: list[str] = []
    for (status, attempt), ids in groups.items():
        canceled += transition_many(
            session, ids, RunStatus.CANCELED, only_from={status}, where=[Run.attempt == attempt]
        )
    if not canceled:
        return set()
    clusters = session.exec(
        select(Run.cluster)
        .where(col(Run.id).in_(canceled), col(Run.cluster).is_not(None))
        .distinct()
    )
    for cluster in clusters:
        news.wake(cluster)
    for run_id in canceled:
        news.status(run_id, RunStatus.CANCELED)
    parents = session.exec(
        select(Run.parent_run_id)
        .where(
            col(Run.parent_run_id).in_(canceled),
            col(Run.status).not_in(TERMINAL),
            col(Run.snapshot_digest).is_not(None),
        )
        .distinct()
    )
    for parent in list(parents):  # rare: a run requeued after its first attempt submitted some
        children = cancel_submitted_children(session, client, parent)
        if ended is not None:
            ended.update(r.id for r, _ in children)
        _tell(children, news)
    return set(canceled)


def cancel_queue(
    session: Session, client: redis.Redis, cluster: str, news: Announcements
) -> list[CancelResult]:
    """Cancel every queued run of ``cluster``: the whole queue, read and ended a batch at a
    time (``cancel_many``)."""
    results: list[CancelResult] = []
    for batch in run_listings.queued_run_ids(session, cluster):
        results += cancel_many(session, client, batch, news)
    return results


def set_priority(session: Session, run_id: str, priority: int) -> Run:
    """Reorder a waiting run (higher starts first). Only while it waits in the database: a
    run already handed to a worker has left the queue."""
    result = session.execute(
        update(Run)
        .where(
            Run.id == run_id,
            Run.status == RunStatus.QUEUED,
            col(Run.dispatched_at).is_(None),
        )
        .values(priority=priority)
    )
    run = get_run(session, run_id)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise IllegalTransition(
            f"run {run_id} is {run.status.value}, not waiting in a queue; its priority is fixed"
        )
    session.refresh(run)
    return run


def front_priority(session: Session, cluster: str) -> int:
    """A priority that puts a run ahead of everything now waiting on the cluster."""
    top = session.exec(
        select(func.max(Run.priority)).where(Run.cluster == cluster, Run.status == RunStatus.QUEUED)
    ).one()
    return min((top or 0) + 1, MAX_PRIORITY)


def uses_snapshot(session: Session, digest: str, clusters: list[str] | None) -> bool:
    """Whether a run on one of ``clusters`` (None: on any) was submitted with the snapshot."""
    query = select(Run.cluster).where(Run.snapshot_digest == digest)
    if clusters is not None:
        query = query.where(col(Run.cluster).in_(clusters))
    return session.exec(query.limit(1)).first() is not None
