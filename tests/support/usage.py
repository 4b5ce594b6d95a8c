"""Run attempts written straight into a live stack's database, for the usage tests: the
hours they held are known by hand, whatever the clock says."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from store import runs
from store.db import make_engine
from store.models import RunAttempt, RunSpec
from tests.support.database import DIGEST
from tests.support.services import Stack

# (run id, attempt, cluster, team, user, GPUs, started, ended or None, outcome or None)
AttemptRow = tuple[str, int, str, str, str, int, datetime, "datetime | None", "str | None"]


def add_attempts(session: Session, rows: list[AttemptRow]) -> None:
    """Attempt rows as given (the caller commits)."""
    for run_id, attempt, cluster, team, user, gpus, started, ended, outcome in rows:
        session.add(
            RunAttempt(
                run_id=run_id,
                attempt=attempt,
                cluster=cluster,
                team=team,
                submitted_by=user,
                gpus=gpus,
                started_at=started,
                ended_at=ended,
                outcome=outcome,
            )
        )


def seed_attempts(stack: Stack, cluster: str, day: datetime) -> None:
    """On ``cluster`` (which must exist), from ``day`` (a UTC midnight):
    - vision (ada), requeued: 10:00-11:00 and 12:00-14:00 on the first day, 2 GPUs
    - nlp (bob): 22:00 the first day to 03:00 the next, 1 GPU
    - no team (ada): since 06:00 the second day and still running

    Over the two days, per team: vision 3 slot-hours (6 GPU-hours, 2 attempts), nlp 5 (5),
    no team 18 (0) to the end of the second day."""

    def at(days: int, hours: float) -> datetime:
        return day + timedelta(days=days, hours=hours)

    engine = make_engine(stack.database_url or f"sqlite:///{stack.root / 'data' / 'runyard.db'}")
    with Session(engine) as session:
        spec = RunSpec(experiment="usage", cluster=cluster, script="a.py")
        ids = [runs.submit(session, spec, DIGEST, None).id for _ in range(3)]
        rows = [
            (ids[0], 1, "vision", "ada", 2, at(0, 10), at(0, 11)),
            (ids[0], 2, "vision", "ada", 2, at(0, 12), at(0, 14)),
            (ids[1], 1, "nlp", "bob", 1, at(0, 22), at(1, 3)),
            (ids[2], 1, "", "ada", 0, at(1, 6), None),
        ]
        add_attempts(
            session,
            [
                (run_id, attempt, cluster, team, user, gpus, started, ended, ended and "completed")
                for run_id, attempt, team, user, gpus, started, ended in rows
            ],
        )
        session.commit()
    engine.dispose()
