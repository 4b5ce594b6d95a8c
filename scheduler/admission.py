"""Admission: queued runs wait in the database and go to the broker only into a free slot.

Order is priority (higher first), then submit time. A cluster's capacity is its node limit,
capped by the slots its live workers offer; runs already handed to the broker or holding a
node count against it (``store.queue``). Everything here is read from the database and
heartbeats, never by peeking into the broker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
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
from scheduler import policy, queue_head
from store.attempts import decayed_usage
from store.clusters import check_isolation, get_cluster
from store.db import insert_ignoring
from store.lifecycle import transition
from store.models import Cluster, Experiment, Run, RunLog, TeamQuota, utcnow
from store.models.teams import NO_TEAM
from store.preemption import PREEMPTIBLE_STATES, request_preemption
from store.queue import (
    TeamQueue,
    WaitingRun,
    capacity,
    capacity_of,
    queue_teams,
    slot_holders,
    waiting_runs,
)
from store.team_status import cluster_quotas, gpus_per_slot, team_of

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


@dataclass
class Admission:
    """What one admission decided: the runs handed over (to send once committed), the
    running runs asked to stop for them (their workers told once committed) and, on a
    cluster with team quotas, why each waiting run it looked at waits."""

    assignments: list[RunAssignment] = field(default_factory=list)
    preemptions: list[PreemptionRequest] = field(default_factory=list)
    # Runs an earlier decision preempted that still hold their slot: their marks are set
    # again (harmless if there), so one lost between that commit and Redis (a scheduler
    # that died, Redis down) never leaves a run counted as stopping that nobody stops.
    reminders: list[PreemptionRequest] = field(default_factory=list)
    reasons: dict[str, str] | None = None  # None: a cluster without quotas
    # When to decide again even if nothing happens (the policy's clock: ``now``'s epoch
    # seconds): a waiting run's victim reaches the cluster's minimum runtime then.
    wake_at: float | None = None


@dataclass(frozen=True)
class PreemptionRequest:
    run_id: str
    attempt: int  # the attempt its worker runs: the one its Redis mark names
    reason: str


def admit(
    session: Session,
    cluster_name: str,
    workers: list[WorkerInfo],
    now: datetime | None = None,
) -> list[RunAssignment]:
    """Mark as many waiting runs handed over as the cluster has free slots, and return
    their assignments, first to start first (``admit_cluster``, for callers that need
    only the runs handed over)."""
    return admit_cluster(session, cluster_name, workers, now).assignments


def admit_cluster(
    session: Session,
    cluster_name: str,
    workers: list[WorkerInfo],
    now: datetime | None = None,
) -> Admission:
    """Mark as many waiting runs handed over as the cluster has free slots, and return
    their assignments, first to start first. Nothing is committed or sent here: the
    scheduler commits, then sends each (``scheduler.service.dispatch_cluster``), so a run
    is recorded as handed over before its task exists.

    A cluster without team quotas (or priority preemption) admits by priority, then submit
    time. One with quotas (or that preempts by priority) admits what
    ``scheduler.policy.decide`` decides, records its preemptions on their victims
    (``store.preemption``) in the same transaction, and returns them to be signalled after
    the commit.

    ``now`` stamps ``dispatched_at``: the scheduler passes Redis' time (``server_time``),
    the clock the watchdog measures a hand-over's age by; the host's clock only where no
    watchdog compares it (benches, tests of admission alone). The policy's clock is the
    same one, in seconds.

    A decision costs the same whatever the queue's length: the cluster is read once, the
    free slots' worth of runs from the head of the queue (an index in queue order; with
    quotas, the head of each team's), their experiments' names in one query, and one
    conditional update marks them all."""
    cluster = session.get(Cluster, cluster_name)
    if cluster is None:
        return Admission()
    quotas = cluster_quotas(session, cluster_name)
    if quotas or cluster.priority_preemption:
        return _admit_by_teams(session, cluster, quotas, workers, now or utcnow())
    free = capacity(session, cluster, workers).free
    if free == 0:
        return Admission()
    runs = waiting_runs(session, cluster_name, limit=free)
    return Admission(assignments=_hand_over(session, cluster, runs, now))


def _hand_over(
    session: Session, cluster: Cluster, runs: list[Run], now: datetime | None
) -> list[RunAssignment]:
    """Mark ``runs`` (in the order they start) handed over, and return the assignments of
    those still waiting when marked."""
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


# Waiting runs read per team beyond the cluster's capacity: enough that each team's next
# run after those that fit gets a reason of its own.
HEAD_SPARE = 2


@dataclass(frozen=True)
class TeamView:
    """A cluster with quotas as ``policy.decide`` sees it, and the rows behind it."""

    state: policy.ClusterState
    running: list[policy.Running]
    pending: list[policy.Pending]  # the head of each team's queue, per kind
    attempts: dict[str, int]  # running run id -> the attempt its worker runs
    stopping: list[PreemptionRequest]  # asked to stop by an earlier decision, still running


def team_state(
    session: Session,
    cluster: Cluster,
    quotas: list[TeamQuota],
    workers: list[WorkerInfo],
    now: datetime,
) -> TeamView:
    """What ``policy.decide`` needs of the cluster at ``now``: its capacity and knobs, its
    quotas and decayed usage, the runs holding its slots, and the head of each team's
    queue per kind (``scheduler.queue_head``: at most capacity + ``HEAD_SPARE`` runs
    each, whatever the queue's length). A run needs one slot and the GPUs of one slot."""
    holders = slot_holders(session, cluster.name)
    cap = capacity_of(cluster, workers, len(holders))
    per_slot = gpus_per_slot(workers, cluster.name)
    # Runs a draining worker finishes hold its own withdrawn slots (``capacity_of``): the
    # policy sees them running within a capacity that includes those slots.
    slots = cap.limit + (len(holders) - cap.busy)
    state = policy.ClusterState(
        capacity=policy.Resources(slots, slots * per_slot),
        quotas={q.team: _policy_quota(q, per_slot) for q in quotas},
        usage=decayed_usage(session, cluster, now),
        min_runtime=float(cluster.preemption_min_runtime_seconds),
        grace=float(cluster.cancel_grace_seconds),
        priority_preemption=bool(cluster.priority_preemption),
        aging_seconds=float(cluster.priority_aging_seconds),
    )
    demand = policy.Resources(1, per_slot)
    running = [
        policy.Running(
            run_id=h.id,
            team=team_of(h.team),
            priority=h.priority,
            started=h.started.timestamp(),
            demand=demand,
            preemptible=h.preemptible,
            preempting=h.preempting,
            # Only a run a worker executes can be asked to stop (``store.preemption``): one
            # handed over but not yet taken, ending, or silent is never chosen.
            stoppable=h.status in PREEMPTIBLE_STATES,
        )
        for h in holders
    ]
    teams = sorted({*queue_teams(session, cluster.name), *(q.team for q in quotas)})
    heads = [
        run
        for team in (None, NO_TEAM, *teams)
        for kind in (False, True)
        for run in queue_head.head(
            TeamQueue(session, cluster.name, team, kind),
            cap.limit + HEAD_SPARE,
            now.timestamp(),
            state.aging_seconds,
        )
    ]
    return TeamView(
        state=state,
        running=running,
        pending=pending_of(heads, per_slot),
        attempts={h.id: h.attempt for h in holders},
        stopping=[
            PreemptionRequest(h.id, h.attempt, h.preemption_reason or "")
            for h in holders
            if h.preempting and h.status in PREEMPTIBLE_STATES
        ],
    )


def _policy_quota(quota: TeamQuota, per_slot: int) -> policy.TeamQuota:
    """A stored quota as the policy reads it: GPUs unset are the slots' own GPUs; a limit
    set for one resource only leaves the other unlimited."""

    def limit(slots: int | None, gpus: int | None) -> policy.Resources | None:
        if slots is None and gpus is None:
            return None
        return policy.Resources(
            UNLIMITED if slots is None else slots, UNLIMITED if gpus is None else gpus
        )

    nominal_gpus = quota.slots * per_slot if quota.gpus is None else quota.gpus
    return policy.TeamQuota(
        team=quota.team,
        nominal=policy.Resources(quota.slots, nominal_gpus),
        borrowing_limit=limit(quota.borrowing_slots, quota.borrowing_gpus),
        lending_limit=limit(quota.lending_slots, quota.lending_gpus),
    )


UNLIMITED = 10**9


def pending_of(runs: list[WaitingRun], per_slot: int) -> list[policy.Pending]:
    demand = policy.Resources(1, per_slot)
    return [
        policy.Pending(
            run_id=run.id,
            team=team_of(run.team),
            priority=run.priority,
            submitted=run.submitted,
            demand=demand,
            preemptible=run.preemptible,
        )
        for run in runs
    ]


def _admit_by_teams(
    session: Session,
    cluster: Cluster,
    quotas: list[TeamQuota],
    workers: list[WorkerInfo],
    now: datetime,
) -> Admission:
    """Admission on a cluster with team quotas (``scheduler.policy``)."""
    view = team_state(session, cluster, quotas, workers, now)
    decision = policy.decide(view.state, view.running, view.pending, now.timestamp())
    admitted = _hand_over(session, cluster, _runs(session, decision.admit), now)
    preemptions = []
    for p in decision.preempt:
        if p.run_id not in view.attempts:
            continue  # not one of the runs it was given: nothing to ask
        if request_preemption(session, p.run_id, by=p.by_run, reason=p.reason, at=now):
            preemptions.append(PreemptionRequest(p.run_id, view.attempts[p.run_id], p.reason))
    reasons = dict(decision.reasons)
    for assignment in admitted:
        reasons.pop(assignment.run_id, None)
    return Admission(admitted, preemptions, view.stopping, reasons, decision.wake_at)


def _runs(session: Session, run_ids: list[str]) -> list[Run]:
    """The records of ``run_ids``, in that order (one query)."""
    if not run_ids:
        return []
    by_id = {run.id: run for run in session.exec(select(Run).where(col(Run.id).in_(run_ids)))}
    return [by_id[i] for i in run_ids if i in by_id]


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
