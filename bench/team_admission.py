"""One admission decision on a cluster shared by teams, against the queue's length (issue 17).

    python -m bench.team_admission [--queued 10000] [--teams 4] [--slots 100] [--rounds 20]

A SQLite store in a temporary folder holds ``--queued`` waiting runs spread over
``--teams`` teams with quotas (priorities 0-4, one in ten non-preemptible) on a cluster
of ``--slots`` slots, all free. Each round is the scheduler's whole decision
(``scheduler.admission.admit_cluster``: the head of every team's queue per kind, the
policy, the hand-over marked) rolled back afterwards, so every round decides on the same
queue: once as submitted, once two days later (aging has lifted every run, so every
priority of every queue is read). Not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import update
from sqlmodel import Session

from bench.figures import Figure
from protocol.workers import WorkerInfo
from scheduler.admission import admit_cluster
from store import clusters, runs
from store.db import make_engine, migrate
from store.models import ClusterCreate, Run, RunSpec, Team, TeamQuota, utcnow

CLUSTER = "shared"
DIGEST = "0" * 64


def fill(session: Session, queued: int, teams: int, slots: int, seed: int = 1) -> None:
    clusters.create_cluster(session, ClusterCreate(name=CLUSTER, nodes=slots))
    names = [f"team-{i}" for i in range(teams)]
    for name in names:
        session.add(Team(name=name))
        session.flush()
        session.add(TeamQuota(cluster=CLUSTER, team=name, slots=slots // teams))
    session.commit()
    rng = random.Random(seed)
    for i in range(queued):
        spec = RunSpec(experiment="sweep", cluster=CLUSTER, script="train.py")
        run = runs.submit(session, spec, DIGEST, submitted_by=None)
        session.execute(
            update(Run)
            .where(Run.id == run.id)
            .values(
                team=rng.choice(names), priority=rng.randrange(5), preemptible=rng.random() >= 0.1
            )
        )
        if i % 1000 == 999:
            session.commit()
    session.commit()


def decide_rounds(session: Session, slots: int, now: datetime, rounds: int) -> list[float]:
    """Milliseconds per decision, each rolled back."""
    workers = [WorkerInfo(id="sim", hostname="bench", clusters=[CLUSTER], slots=slots)]
    took: list[float] = []
    for _ in range(rounds + 1):  # the first warms the caches
        started = time.perf_counter()
        decided = admit_cluster(session, CLUSTER, workers, now)
        took.append(1000 * (time.perf_counter() - started))
        session.rollback()
        if len(decided.assignments) != slots:
            raise RuntimeError(f"admitted {len(decided.assignments)} runs into {slots} slots")
    return took[1:]


def measure(queued: int, teams: int, slots: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'bench.sqlite'}")
        try:
            migrate(engine)
            with Session(engine) as session:
                fill(session, queued, teams, slots)
                now = utcnow()
                fresh = decide_rounds(session, slots, now, rounds)
                aged = decide_rounds(session, slots, now + timedelta(days=2), rounds)
        finally:
            engine.dispose()
    return {
        "fresh_ms": statistics.median(fresh),
        "aged_ms": statistics.median(aged),
        "aged_max_ms": max(aged),
    }


def figures(quick: bool = False) -> list[Figure]:
    queued, rounds = (1000, 5) if quick else (10_000, 20)
    found = measure(queued, 4, 100, rounds)
    where = f"{queued:,} waiting, 4 teams, 100 free slots, SQLite"
    return [
        Figure(f"team admission: one decision ({where})", found["fresh_ms"], "ms"),
        Figure(f"team admission: one decision, queue 2 days old ({where})", found["aged_ms"], "ms"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--teams", type=int, default=4)
    parser.add_argument("--slots", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    if min(args.queued, args.teams, args.slots, args.rounds) < 1:
        parser.error("--queued, --teams, --slots and --rounds must be at least 1")
    if args.queued < args.slots:
        parser.error("--queued must be at least --slots (every slot is filled each round)")
    found = measure(args.queued, args.teams, args.slots, args.rounds)
    print(
        f"{args.queued:,} waiting runs, {args.teams} teams, {args.slots} free slots (SQLite): "
        f"one decision {found['fresh_ms']:.1f} ms (median of {args.rounds}); "
        f"queue 2 days old {found['aged_ms']:.1f} ms (max {found['aged_max_ms']:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
