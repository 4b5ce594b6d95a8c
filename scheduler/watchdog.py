"""The watchdog: no run stays active once its worker has gone silent.

A worker refreshes an alive key per run it holds. A run on a node whose key has expired
becomes NotResponding, and Failed once it has stayed silent for ``failed_after`` more
seconds. A run handed to the broker that no worker claimed in time is sent again.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from celery import Celery
from sqlmodel import Session, col, select

from runyard.errors import IllegalTransition
from runyard.status import ACTIVE, RunStatus
from scheduler import control, keys
from scheduler.admission import resend
from scheduler.db import as_utc
from scheduler.lifecycle import transition
from scheduler.messages import StateChanged
from scheduler.models import Run, utcnow
from scheduler.settings import Settings
from scheduler.streams import publish_live

log = logging.getLogger(__name__)


def sweep(session: Session, client: redis.Redis, celery: Celery, settings: Settings) -> set[str]:
    """One pass; returns the clusters that gained a free slot."""
    freed: set[str] = set()
    now = utcnow()
    active = list(session.exec(select(Run).where(col(Run.status).in_(ACTIVE))))
    if active:
        pipe = client.pipeline(transaction=False)
        for run in active:
            pipe.exists(keys.run_alive(run.id))
        alive = pipe.execute()
        for run, is_alive in zip(active, alive, strict=True):
            changed = _check(session, run, bool(is_alive), now, settings)
            if changed is not None:
                publish_live(client, [StateChanged(run_id=run.id, status=changed.status)])
                if changed.status.is_terminal and run.cluster:
                    freed.add(run.cluster)
    session.commit()

    stale = now - timedelta(seconds=settings.dispatch_timeout)
    unclaimed = session.exec(
        select(Run).where(
            Run.status == RunStatus.QUEUED,
            col(Run.dispatched_at).is_not(None),
            col(Run.dispatched_at) < stale,
        )
    )
    for run in list(unclaimed):
        if not control.is_claimed(client, run.id):
            log.warning(
                "run %s was not picked up in %ss; sending again", run.id, settings.dispatch_timeout
            )
            resend(session, celery, run)
    return freed


def _check(session: Session, run: Run, alive: bool, now, settings: Settings) -> Run | None:  # type: ignore[no-untyped-def]
    try:
        if run.status == RunStatus.NOT_RESPONDING:
            if alive:
                return transition(session, run.id, RunStatus.RUNNING)
            since = as_utc(run.not_responding_at) or now
            if (now - since).total_seconds() >= settings.failed_after:
                silent = settings.not_responding_after + settings.failed_after
                return transition(
                    session,
                    run.id,
                    RunStatus.FAILED,
                    failure_reason=(
                        f"node lost: worker {run.worker_id or '?'} sent no heartbeat "
                        f"for {silent:.0f}s"
                    ),
                )
            return None
        if alive:
            return None
        # A just-claimed run may be reported before its first heartbeat lands: give it the
        # same grace a heartbeat has.
        started = as_utc(run.preparing_at or run.starting_at or run.running_at) or now
        if (now - started).total_seconds() < settings.not_responding_after:
            return None
        return transition(session, run.id, RunStatus.NOT_RESPONDING)
    except IllegalTransition:
        return None
