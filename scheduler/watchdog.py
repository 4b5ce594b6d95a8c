"""The watchdog: no run stays active once its worker has gone silent.

A worker refreshes an alive key per run it holds. A run on a node whose key has expired
becomes NotResponding, and Failed (or requeued, where its cluster asks for it) once it has
stayed silent for ``failed_after`` more seconds. A run handed to the broker that no worker
claimed in time is sent again.

Silence is measured by Redis' clock alone: keys expire by it, the sweep reads ``now`` from
it (``TIME``) and stamps ``not_responding_at`` with it, and admission stamps
``dispatched_at`` with it (``scheduler.service``), so neither a scheduler host whose clock
is off nor two schedulers on different hosts take a live run for a lost one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from sqlmodel import Session, col, select, update

from protocol import control, keys
from protocol.messages import RunAssignment
from protocol.settings import Settings
from protocol.workers import server_time
from runyard.status import ACTIVE, RunStatus
from scheduler.admission import resend
from store import attempts
from store.announcements import Announcements
from store.db import as_utc
from store.lifecycle import REQUEUED, end_children_of, transition_many
from store.models import Cluster, Run
from store.queue import handed_to_broker

log = logging.getLogger(__name__)


def sweep(
    session: Session, client: redis.Redis, settings: Settings, news: Announcements
) -> list[RunAssignment]:
    """One pass over the runs that hold, or were handed, a node. Runs it moves go into
    ``news``; it returns the runs to send again, each marked handed over anew. The caller
    commits, then announces and sends (``scheduler.service.sweep_runs``)."""
    now = server_time(client)
    # Only runs a worker holds have a heartbeat (not children, not interactive runs).
    active = list(
        session.exec(
            select(Run).where(col(Run.status).in_(ACTIVE), col(Run.dispatched_at).is_not(None))
        )
    )
    # Decided run by run, written together: the runs of a lost node move in a few
    # statements, not one each (``store.lifecycle.ROWS_PER_STATEMENT`` says why).
    moves: dict[Move, list[str]] = {}
    attempt_of = {run.id: run.attempt for run in active}  # read before the moves expire them
    for run, alive in zip(active, _alive(client, active), strict=True):
        move = _check(session, client, run, alive, now, settings)
        if move is not None:
            moves.setdefault(move, []).append(run.id)
    for move, ids in moves.items():
        values = REQUEUED if move.new == RunStatus.QUEUED else {}
        if move.reason is not None:
            values = {**values, "failure_reason": move.reason}
        # As ``transition`` would: a run that changed meanwhile moves only if it still may
        # (and is still on a node); the others are left to the next sweep.
        at = now if move.new == RunStatus.NOT_RESPONDING else None
        moved = transition_many(session, ids, move.new, at=at, only_from=ACTIVE, **values)
        if move.new.is_terminal:
            end_children_of(session, moved, move.new)
        if move.new.is_terminal or move.new == RunStatus.QUEUED:
            # Failed or requeued, its node lost: the attempt held its slot until now.
            for run_id in moved:
                attempts.attempt_ended(session, run_id, attempt_of[run_id], now, attempts.LOST)
        for run_id in moved:
            news.status(run_id, move.new)

    stale = now - timedelta(seconds=settings.dispatch_timeout)
    handed_over = list(
        session.exec(select(Run).where(handed_to_broker(), col(Run.dispatched_at) < stale))
    )
    lost = []
    for run, alive in zip(handed_over, _alive(client, handed_over), strict=True):
        if not control.is_claimed(client, run.id, run.attempt):
            log.warning(
                "run %s was not picked up in %ss; sending it again",
                run.id,
                settings.dispatch_timeout,
            )
            assignment = resend(session, run, now)
            if assignment is not None:
                lost.append(assignment)
        elif not alive:
            # Claimed by a worker that died before it reported anything: it never started.
            # One only cut off from Redis may still start it: superseded, it stops as soon as
            # it hears Redis again, instead of running on unseen beside the next attempt.
            log.warning("worker of %s vanished before starting it; back to the queue", run.id)
            control.supersede(client, run.id, run.attempt)
            client.delete(keys.run_claim(run.id, run.attempt))
            session.execute(update(Run).where(Run.id == run.id).values(dispatched_at=None))
    return lost


def _alive(client: redis.Redis, runs: list[Run]) -> list[bool]:
    if not runs:
        return []
    pipe = client.pipeline(transaction=False)
    for run in runs:
        pipe.exists(keys.run_alive(run.id))
    return [bool(found) for found in pipe.execute()]


@dataclass(frozen=True)
class Move:
    """A state change the sweep decided for a run, and why."""

    new: RunStatus
    reason: str | None = None


def _check(
    session: Session, client: redis.Redis, run: Run, alive: bool, now: datetime, settings: Settings
) -> Move | None:
    if run.status == RunStatus.NOT_RESPONDING:
        if alive:
            return Move(RunStatus.RUNNING)
        since = as_utc(run.not_responding_at) or now
        if (now - since).total_seconds() >= settings.failed_after:
            silent = settings.not_responding_after + settings.failed_after
            cluster = session.get(Cluster, run.cluster) if run.cluster else None
            if cluster and cluster.requeue_on_node_loss and run.attempt < cluster.max_attempts:
                log.warning("run %s lost its node (attempt %d); requeued", run.id, run.attempt)
                control.supersede(client, run.id, run.attempt)
                return Move(RunStatus.QUEUED)
            # The attempt is over either way: a worker only cut off stops the run as soon
            # as it hears Redis again, rather than running on for nothing.
            control.supersede(client, run.id, run.attempt)
            reason = f"node lost: worker {run.worker_id or '?'} sent no heartbeat for {silent:.0f}s"
            return Move(RunStatus.FAILED, reason)
        return None
    if alive:
        return None
    # A just-claimed run may be reported before its first heartbeat lands: give it the
    # same grace a heartbeat has, counted from when it was handed to the broker.
    handed = (
        as_utc(
            run.dispatched_at
            or run.preparing_at
            or run.starting_at
            or run.running_at
            or run.cancel_requested_at
        )
        or now
    )
    if (now - handed).total_seconds() < settings.not_responding_after:
        return None
    return Move(RunStatus.NOT_RESPONDING)
