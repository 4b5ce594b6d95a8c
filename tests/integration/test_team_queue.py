"""A cluster shared by teams as a user sees it over REST, the CLI and ``/metrics``, on
SQLite and PostgreSQL: the API alone, the scheduler's admission run in this process on the
same database and Redis (as the leader runs it). Each waiting run says why it waits, the
cluster's view shows each team's quota, use, borrowing and lending, and a preempted run's
record says by whom and why."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import redis
from celery import Celery
from sqlmodel import Session

from protocol.celery_app import make_celery
from protocol.workers import live_workers
from runyard import api_paths
from runyard.status import RunStatus
from scheduler.service import dispatch_cluster
from store.db import make_engine
from store.models import Team, TeamQuota
from tests.support.database import ago, heartbeat, make_cluster, queue_run, set_columns, walk
from tests.support.services import (
    ADMIN,
    ADMIN_TOKEN,
    RedisServer,
    Stack,
    runyard,
    unique,
)


@pytest.fixture
def api(
    database_url: str, redis_service: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The API alone (admission is run by the test) on the database."""
    root = tmp_path_factory.mktemp("teams")
    url = database_url if database_url.startswith("postgresql") else f"sqlite:///{root}/db.sqlite"
    live = Stack(root=root, redis=redis_service, database_url=url)
    live.start_api()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def celery(redis_service: RedisServer) -> Iterator[Celery]:
    app = make_celery(redis_service.url)
    try:
        yield app
    finally:
        app.close()


def test_the_queue_the_cluster_and_the_preempted_run_explain_the_team_scheduler(
    api: Stack, celery: Celery
) -> None:
    cluster = unique("t")[:30].lower().replace("_", "-")
    client = redis.Redis.from_url(api.redis.url)
    engine = make_engine(api.database_url)
    try:
        with Session(engine) as session:
            make_cluster(session, cluster, nodes=2, preemption_min_runtime_seconds=60)
            for team in ("vision", "nlp"):
                session.add(Team(name=team))
                session.flush()
                session.add(TeamQuota(cluster=cluster, team=team, slots=1))
            session.commit()
            heartbeat(client, cluster, slots=2, worker=f"w-{cluster}")
            borrowers = []
            for i in range(2):
                run_id = queue_run(session, cluster, created_at=ago(900) + timedelta(seconds=i))
                set_columns(session, run_id, team="vision")
                borrowers.append(run_id)
            workers = live_workers(client)
            assert dispatch_cluster(session, celery, cluster, workers, client=client) == borrowers
            for run_id in borrowers:
                walk(session, run_id, RunStatus.PREPARING, RunStatus.STARTING, RunStatus.RUNNING)
                set_columns(session, run_id, dispatched_at=ago(300))
            theirs = []
            for i in range(2):
                run_id = queue_run(session, cluster, created_at=ago(30) + timedelta(seconds=i))
                set_columns(session, run_id, team="nlp")
                theirs.append(run_id)
            assert dispatch_cluster(session, celery, cluster, workers, client=client) == []
    finally:
        engine.dispose()
        client.close()

    with httpx.Client(base_url=f"{api.url}/api/v1", headers=ADMIN, timeout=30) as http:
        queue = http.get(api_paths.cluster_runs(cluster), params={"status": "queued"}).json()
        reasons = {r["id"]: r["pending_reason"] for r in queue["data"]}
        shown = http.get(api_paths.cluster(cluster)).json()
        victim = http.get(api_paths.run(borrowers[1])).json()
        metrics = httpx.get(f"{api.url}/metrics", headers=ADMIN, timeout=30).text

    assert reasons[theirs[0]] == (
        f"will reclaim 1 slot(s) from team vision (preempting run {borrowers[1]})"
    )
    assert reasons[theirs[1]]  # every waiting run says why
    teams = {t["team"]: t for t in shown["teams"]}
    assert (teams["vision"]["quota_slots"], teams["vision"]["used_slots"]) == (1, 2)
    assert teams["vision"]["borrowed_slots"] == 1
    assert (teams["nlp"]["lent_slots"], teams["nlp"]["waiting"]) == (1, 2)
    assert victim["preempted_by"] == theirs[0]
    assert victim["preemption_reason"] == "reclaimed by team nlp (0/1 slots of its quota in use)"
    assert f'runyard_team_used_slots{{cluster="{cluster}",team="vision"}} 2.0' in metrics
    assert f'runyard_team_waiting_runs{{cluster="{cluster}",team="nlp"}} 2.0' in metrics

    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(RUNYARD_URL=api.url, RUNYARD_TOKEN=ADMIN_TOKEN, COLUMNS="400")
    show = subprocess.run(
        runyard("show", borrowers[1]), env=env, capture_output=True, text=True, timeout=60
    )
    assert show.returncode == 0, show.stderr
    lines = {
        line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in show.stdout.splitlines()
    }
    assert lines["preempted_by"] == theirs[0]
    assert lines["preemption_reason"] == victim["preemption_reason"]
    shown_cli = subprocess.run(
        runyard("cluster", "show", cluster), env=env, capture_output=True, text=True, timeout=60
    )
    assert shown_cli.returncode == 0, shown_cli.stderr
    vision = next(
        line for line in shown_cli.stdout.splitlines() if line.strip().startswith("vision")
    )
    cells = [c for c in vision.split() if c != "\u2502"]
    assert cells[:5] == ["vision", "1", "2", "1", "0"]  # quota, used, borrowed, lent
