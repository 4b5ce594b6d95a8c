"""Admission: queued runs wait in the database and go to the broker only into a free slot.

Order is priority (higher first), then submit time. A cluster's capacity is its node limit,
capped by the slots its live workers offer; runs already handed to the broker or holding a
node count against it (``store.queue``). Everything here is read from the database and
heartbeats, never by peeking into the broker.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from celery import Celery
from sqlmodel import Session, col, select, update

from protocol import keys
from protocol.celery_app import TASK_EXECUTE_RUN
from protocol.environments import Executor, merge_environments, wants_container
from protocol.messages import LOG_SEQ_STRIDE, SERVICE_PREFIX, MessageError, RunAssignment
from protocol.workers import WorkerInfo
from runyard.errors import ClusterNotFound, IllegalTransition, NotSupported
from runyard.status import RunStatus
from store.clusters import check_isolation, get_cluster
from store.db import insert_ignoring
from store.lifecycle import transition
from store.models import Cluster, Experiment, Run, RunLog, utcnow
from store.queue import capacity, waiting_runs

log = logging.getLogger(__name__)

# What building a run's assignment raises when the run can never start as recorded.
UNRUNNABLE = (MessageError, NotSupported, ClusterNotFound, ValueError, TypeError)


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
        build_only=bool(run.build_only),
        team=run.team,
        previous_attempt_preempted=bool(run.previous_attempt_preempted),
    )


def executor_for(environment: dict, cluster: Cluster) -> str:
    """Where the run executes. The cluster decides whether its hosts run scripts directly:
    on a Docker cluster everything runs in a container (a user-managed environment there
    means the image's own Python), so no submitter can escape the confinement (its workers
    hold the Docker socket). On a local cluster a run that asks for a container runs in
    one only if the cluster allows it; otherwise it is refused, never run on the host."""
    if cluster.executor == Executor.DOCKER:
        return Executor.DOCKER
    check_isolation(cluster, environment)  # the cluster may have changed since the submit
    return Executor.DOCKER if wants_container(environment) else Executor.LOCAL


def admit(
    session: Session,
    cluster_name: str,
    workers: list[WorkerInfo],
    now: datetime | None = None,
) -> list[RunAssignment]:
    """Mark as many waiting runs handed over as the cluster has free slots, and return
    their assignments, first to start first. Nothing is committed or sent here: the
    scheduler commits, then sends each (``scheduler.service.dispatch_cluster``), so a run
    is recorded as handed over before its task exists.

    ``now`` stamps ``dispatched_at``: the scheduler passes Redis' time (``server_time``),
    the clock the watchdog measures a hand-over's age by; the host's clock only where no
    watchdog compares it (benches, tests of admission alone).

    A decision costs the same whatever the queue's length: the cluster is read once, the
    free slots' worth of runs from the head of the queue (an index in queue order), their
    experiments' names in one query, and one conditional update marks them all."""
    cluster = session.get(Cluster, cluster_name)
    if cluster is None:
        return []
    free = capacity(session, cluster, workers).free
    if free == 0:
        return []
    runs = waiting_runs(session, cluster_name, limit=free)
    names = experiment_names(session, runs)
    candidates: dict[str, RunAssignment] = {}
    for run in runs:
        attempt = run.attempt + 1  # each hand-over to a worker is a new attempt
        assignment = _startable(session, run, cluster, names, attempt)
        if assignment is not None:
            candidates[run.id] = assignment
    if not candidates:
        return []
    # Conditional on each run still waiting: a cancel (or a priority change that took it
    # elsewhere) that committed first wins; such a run is simply not returned.
    marked = session.execute(
        update(Run)
        .where(
            col(Run.id).in_(list(candidates)),
            Run.status == RunStatus.QUEUED,
            col(Run.dispatched_at).is_(None),
        )
        .values(dispatched_at=now or utcnow(), attempt=Run.attempt + 1)
        .returning(Run.id, Run.attempt)
        .execution_options(synchronize_session=False)
    )
    attempts = dict(marked.all())
    admitted = []
    for run_id, assignment in candidates.items():  # queue order
        if run_id not in attempts:
            continue
        if attempts[run_id] != assignment.attempt:  # changed between read and update
            assignment = replace(assignment, attempt=attempts[run_id])
        admitted.append(assignment)
    return admitted


def experiment_names(session: Session, runs: list[Run]) -> dict[int, str]:
    """The names of the runs' experiments, in one query."""
    ids = {run.experiment_id for run in runs}
    if not ids:
        return {}
    rows = session.exec(select(Experiment.id, Experiment.name).where(col(Experiment.id).in_(ids)))
    return {experiment_id: name for experiment_id, name in rows if experiment_id is not None}


def _startable(
    session: Session,
    run: Run,
    cluster: Cluster | None,
    names: dict[int, str] | None,
    attempt: int,
) -> RunAssignment | None:
    """The run's assignment for ``attempt``; or, when the run can never start as recorded
    (its cluster changed or went away, its record is malformed), None once the run is failed
    with the reason: one unrunnable record never holds a slot, stalls the queue behind it or
    undoes the rest of its caller's unit of work. ``cluster`` and ``names`` are what the
    caller already read (None: read them here)."""
    try:
        if cluster is None:
            cluster = get_cluster(session, run.cluster or "")
        if names is None:
            names = experiment_names(session, [run])
        return assignment_for(run, cluster, names.get(run.experiment_id, "default"), attempt)
    except UNRUNNABLE as exc:
        log.warning("cannot start %s: %s", run.id, exc)
        _refuse(session, run, attempt, f"cannot start: {exc}")
        return None


def _refuse(session: Session, run: Run, attempt: int, reason: str) -> None:
    """End a run no worker could start: Failed, and its log says why (no worker will ever
    write a line of it)."""
    try:
        transition(session, run.id, RunStatus.FAILED, failure_reason=reason)
    except IllegalTransition:
        return  # it ended while we looked (a cancel committed first): its own end stands
    line = f"{SERVICE_PREFIX}Failed before the script started: {reason}\n"
    # Another dispatcher may fail the same run at the same time: one line, no error.
    session.execute(
        insert_ignoring(session, RunLog)
        .values(run_id=run.id, seq=attempt * LOG_SEQ_STRIDE, text=line)
        .on_conflict_do_nothing(index_elements=["run_id", "seq"])
    )


def shown(assignment: RunAssignment) -> str:
    """What tools may show of a run's task: which run, which attempt, which cluster."""
    return f"[run {assignment.run_id} attempt {assignment.attempt} on {assignment.cluster}]"


def send(celery: Celery, assignment: RunAssignment, producer: Any = None) -> None:
    """Send the run's task; ``producer`` (one a caller holds for a whole batch) saves a
    broker connection and channel per task."""
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
        producer=producer,
    )
    log.info("dispatched %s to %s", assignment.run_id, keys.cluster_queue(assignment.cluster))


def resend(session: Session, run: Run, now: datetime) -> RunAssignment | None:
    """A handed-over run that no worker claimed (its message was lost): marked handed over
    anew at ``now`` (the watchdog's Redis time), and its assignment returned for the caller
    to send again once it has committed (None: it can no longer start, and failed)."""
    assignment = _startable(session, run, None, None, run.attempt)
    if assignment is None:
        return None
    session.execute(update(Run).where(Run.id == run.id).values(dispatched_at=now))
    return assignment


def take_back(session: Session, assignments: list[RunAssignment]) -> None:
    """Admitted runs whose tasks were never sent (the broker failed first) wait again, on
    their previous attempt, as if admission had not looked at them."""
    for assignment in assignments:
        session.execute(
            update(Run)
            .where(
                Run.id == assignment.run_id,
                Run.status == RunStatus.QUEUED,
                Run.attempt == assignment.attempt,
                col(Run.dispatched_at).is_not(None),
            )
            .values(dispatched_at=None, attempt=assignment.attempt - 1)
        )
