"""Admission: queued runs wait in the database and go to the broker only into a free slot.

Order is priority (higher first), then submit time. A cluster's capacity is its node limit,
capped by the slots its live workers offer; runs already handed to the broker or holding a
node count against it. Everything here is read from the database and heartbeats, never by
peeking into the broker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import Select
from sqlmodel import Session, col, func, select, update

from runyard.errors import NotSupported
from runyard.status import RunStatus
from scheduler import keys
from scheduler.celery_app import TASK_EXECUTE_RUN
from scheduler.clusters import HOLDING_A_SLOT, check_isolation, get_cluster, wants_container
from scheduler.db import insert_ignoring
from scheduler.lifecycle import transition
from scheduler.messages import LOG_SEQ_STRIDE, SERVICE_PREFIX, MessageError, RunAssignment
from scheduler.models import Cluster, Experiment, Run, RunLog, merge_environments, utcnow
from scheduler.workers import WorkerInfo, workers_serving

log = logging.getLogger(__name__)


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


def slots_held(cluster_name: str) -> Select:
    """How many of the cluster's runs hold a slot: active ones, and queued ones already
    handed to the broker. A count query, so it can stand alone or inside another read."""
    handed_over = (Run.status == RunStatus.QUEUED) & col(Run.dispatched_at).is_not(None)
    return select(func.count()).where(
        Run.cluster == cluster_name,
        col(Run.status).in_(HOLDING_A_SLOT) | handed_over,
    )


def capacity(
    session: Session, cluster: Cluster, workers: list[WorkerInfo], besides: str | None = None
) -> Capacity:
    """The cluster's slots and how many are taken, leaving out the run ``besides``: one a
    caller read as waiting. The scheduler may hand it to a worker between the caller's
    read and this count; counted then, it would hold the very slot it waits for ("all 1
    node(s) busy" on an idle cluster). A whole queue is read with its count in one
    statement instead (``scheduler.runs``), so no list of ids is ever needed."""
    holding = slots_held(cluster.name)
    if besides is not None:
        holding = holding.where(Run.id != besides)
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


def assignment_for(
    run: Run,
    cluster: Cluster,
    experiment_name: str,
    attempt: int | None = None,
) -> RunAssignment:
    environment = merge_environments(cluster.environment or {}, run.environment or {})
    attempt = run.attempt if attempt is None else attempt
    return RunAssignment(
        run_id=run.id,
        cluster=cluster.name,
        experiment=experiment_name,
        script=run.script,
        arguments=list(run.arguments or []),
        environment=environment,
        snapshot_digest=run.snapshot_digest,
        executor=executor_for(environment, cluster),
        cancel_grace_seconds=cluster.cancel_grace_seconds,
        container=dict(cluster.container or {}),
        attempt=attempt,
        requeue_on_node_loss=bool(cluster.requeue_on_node_loss),
        max_run_duration_seconds=run.max_run_duration_seconds,
        budgets=dict(cluster.budgets or {}),
    )


def executor_for(environment: dict, cluster: Cluster) -> str:
    """Where the run executes. The cluster decides whether its hosts run scripts directly:
    on a Docker cluster everything runs in a container (a user-managed environment there
    means the image's own Python), so no submitter can escape the confinement (its workers
    hold the Docker socket). On a local cluster a run that asks for a container runs in
    one only if the cluster allows it; otherwise it is refused, never run on the host."""
    if cluster.executor == "docker":
        return "docker"
    check_isolation(cluster, environment)  # the cluster may have changed since the submit
    return "docker" if wants_container(environment) else "local"


def dispatch(
    session: Session,
    celery: Celery,
    cluster_name: str,
    workers: list[WorkerInfo],
) -> list[str]:
    """Hand as many waiting runs to the cluster's queue as it has free slots."""
    cluster = session.get(Cluster, cluster_name)
    if cluster is None:
        return []
    free = capacity(session, cluster, workers).free
    if free == 0:
        return []
    sent = []
    for run in waiting_runs(session, cluster_name, limit=free):
        attempt = run.attempt + 1  # each hand-over to a worker is a new attempt
        try:
            experiment = _experiment_name(session, run)
            assignment = assignment_for(run, cluster, experiment, attempt)
        except (MessageError, NotSupported, ValueError, TypeError) as exc:
            # Never let one unrunnable record hold a slot or stall the queue behind it.
            log.warning("cannot dispatch %s: %s", run.id, exc)
            reason = f"cannot start: {exc}"
            # Its log says so too: no worker will ever write a line of it.
            line = f"{SERVICE_PREFIX}Failed before the script started: {reason}\n"
            # Another dispatcher may fail the same run at the same time: one line, no error.
            session.execute(
                insert_ignoring(session, RunLog)
                .values(run_id=run.id, seq=attempt * LOG_SEQ_STRIDE, text=line)
                .on_conflict_do_nothing(index_elements=["run_id", "seq"])
            )
            transition(session, run.id, RunStatus.FAILED, failure_reason=reason)
            session.commit()
            continue
        # Conditional on the run still waiting: a cancel that committed first wins.
        result = session.execute(
            update(Run)
            .where(
                Run.id == run.id,
                Run.status == RunStatus.QUEUED,
                col(Run.dispatched_at).is_(None),
            )
            .values(dispatched_at=utcnow(), attempt=attempt)
        )
        session.commit()
        if result.rowcount != 1:  # type: ignore[attr-defined]
            continue
        send(celery, assignment)
        sent.append(run.id)
    return sent


def shown(assignment: RunAssignment) -> str:
    """What tools may show of a run's task: which run, which attempt, which cluster."""
    return f"[run {assignment.run_id} attempt {assignment.attempt} on {assignment.cluster}]"


def send(celery: Celery, assignment: RunAssignment) -> None:
    celery.send_task(
        TASK_EXECUTE_RUN,
        args=[assignment.encode()],
        # The assignment holds the run's script arguments and environment variables. Celery
        # shows argsrepr/kwargsrepr instead of the arguments in its events (Flower's task
        # pages), its logs and `inspect active`; the worker answers the other inspect
        # commands with them too (worker/app.py: hide_task_arguments).
        argsrepr=shown(assignment),
        kwargsrepr="{}",
        queue=keys.cluster_queue(assignment.cluster),
        task_id=f"{assignment.run_id}.{utcnow().timestamp():.6f}",
    )
    log.info("dispatched %s to %s", assignment.run_id, keys.cluster_queue(assignment.cluster))


def resend(session: Session, celery: Celery, run: Run) -> None:
    """Send a handed-over run again when no worker claimed it (the message was lost)."""
    cluster = get_cluster(session, run.cluster or "")
    session.execute(update(Run).where(Run.id == run.id).values(dispatched_at=utcnow()))
    session.commit()
    experiment = _experiment_name(session, run)
    send(celery, assignment_for(run, cluster, experiment))


def _experiment_name(session: Session, run: Run) -> str:
    experiment = session.get(Experiment, run.experiment_id)
    return experiment.name if experiment else "default"


def position_of(session: Session, run: Run) -> int:
    """1-based place of a waiting run in its cluster's queue (one count, no listing)."""
    ahead = (
        (col(Run.priority) > run.priority)
        | ((Run.priority == run.priority) & (col(Run.created_at) < run.created_at))
        | (
            (Run.priority == run.priority)
            & (Run.created_at == run.created_at)
            & (col(Run.id) < run.id)
        )
    )
    count = session.exec(
        select(func.count()).where(
            Run.cluster == run.cluster,
            Run.status == RunStatus.QUEUED,
            col(Run.dispatched_at).is_(None),
            ahead,
        )
    ).one()
    return count + 1


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
