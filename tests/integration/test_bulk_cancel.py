"""Bulk state changes, set-based, as a user meets them (REST, CLI), on SQLite and
PostgreSQL: cancelling a whole queue, a job array's runs, or a parent with a thousand
children ends exactly the runs the one-by-one path ended, with the same statuses, end
times, reasons, audit records and live announcements, the cancel marks that keep workers
from starting them, and counters equal to a recount of the runs."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session, col, select, update

from protocol import control, keys
from protocol.messages import StateChanged, decode
from runyard.status import RunStatus
from store import counters, runs
from store.db import make_engine
from store.models import Run, RunArraySpec, utcnow
from tests.support.database import DIGEST
from tests.support.services import ADMIN_TOKEN, RedisServer, Stack, runyard, unique

# More than two statements' worth (store.lifecycle.ROWS_PER_STATEMENT is 500).
MANY = 1_200


@pytest.fixture
def api(database_url: str, redis_service: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    """The API alone (no scheduler: what is queued stays queued) on each database."""
    live = Stack(root=tmp_path / "stack", redis=redis_service, database_url=database_url)
    live.start_api()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def engine(api: Stack) -> Iterator[Engine]:
    engine = make_engine(api.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def client(api: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(api.redis.url)
    try:
        yield client
    finally:
        client.close()


def array_of(api: Stack, engine: Engine, count: int) -> tuple[str, list[str]]:
    """A new cluster with a job array of ``count`` queued runs (written through the store:
    an upload is not what is tested here); the cluster and the ids in queue order."""
    cluster = unique("bulk")[:30].lower().replace("_", "-")
    api.client().create_cluster(cluster, nodes=1)
    spec = RunArraySpec(
        experiment="sweep",
        cluster=cluster,
        script="train.py",
        arguments_list=[["--seed", str(i)] for i in range(count)],
    )
    with Session(engine) as session:
        _, _, ids = runs.submit_array(session, spec, DIGEST, submitted_by="admin")
        session.commit()
    return cluster, ids


def hand_over(engine: Engine, run_id: str) -> None:
    """Admission's mark: the run went to the broker as attempt 1, no worker has it yet."""
    with Session(engine) as session:
        session.execute(
            update(Run).where(col(Run.id) == run_id).values(dispatched_at=utcnow(), attempt=1)
        )
        session.commit()


def stored(engine: Engine, ids: list[str]) -> dict[str, Run]:
    with Session(engine) as session:
        rows = session.exec(select(Run).where(col(Run.id).in_(ids))).all()
        return {run.id: run for run in rows}


def counters_agree(engine: Engine) -> bool:
    with Session(engine) as session:
        return counters.read(session) == counters.recount(session)


def announced(client: redis.Redis, run_id: str) -> list[RunStatus]:
    """The statuses the run's live stream carries (what a follower of it is told)."""
    entries = [decode(fields) for _, fields in client.xrange(keys.run_live(run_id))]
    return [e.status for e in entries if isinstance(e, StateChanged)]


def audited(api: Stack) -> set[str]:
    cancels = api.client().pages("/audit", page=500, action="run.cancel")
    return {event["target"] for event in cancels}


def test_cancel_queued_ends_the_whole_queue_as_one_run_at_a_time_did(
    api: Stack, engine: Engine, client: redis.Redis
) -> None:
    cluster, ids = array_of(api, engine, MANY)
    handed, claimed = ids[0], ids[1]
    hand_over(engine, handed)
    hand_over(engine, claimed)
    assert control.claim_run(client, claimed, "w-1", attempt=1) == control.ClaimResult.CLAIMED

    results = api.client().cancel_queued(cluster)

    assert [r["id"] for r in results] == [handed, claimed, *ids[2:]]  # queue order
    status = {r["id"]: r["status"] for r in results}
    assert status.pop(claimed) == "CancelRequested"  # its worker has it: asked to stop
    assert set(status.values()) == {"Canceled"} and not any(r["error"] for r in results)
    after = stored(engine, ids)
    assert after[claimed].status == RunStatus.CANCEL_REQUESTED
    assert after[claimed].cancel_requested_at is not None
    ended = [after[i] for i in ids if i != claimed]
    assert {r.status for r in ended} == {RunStatus.CANCELED}
    assert all(r.canceled_at is not None and r.failure_reason is None for r in ended)
    # The cancel marks landed first: no worker can start any of them any more.
    assert control.claim_run(client, handed, "w-2", attempt=1) == control.ClaimResult.CANCELED
    assert control.claim_run(client, ids[-1], "w-2") == control.ClaimResult.CANCELED
    assert counters_agree(engine)
    assert audited(api) >= set(ids)
    assert announced(client, ids[-1]) == [RunStatus.CANCELED]
    assert announced(client, claimed) == [RunStatus.CANCEL_REQUESTED]
    assert api.client().cluster_runs_page(cluster, "queued")["count"] == 0
    assert api.client().cancel_queued(cluster) == []  # nothing left: nothing changes


def test_cancelling_a_job_array_by_ids_reports_each_run_as_before(
    api: Stack, engine: Engine, client: redis.Redis
) -> None:
    _, ids = array_of(api, engine, 900)
    with Session(engine) as session:
        session.execute(
            update(Run)
            .where(col(Run.id) == ids[5])
            .values(status=RunStatus.COMPLETED, completed_at=utcnow())
        )
        session.commit()
    asked = [*ids, ids[0], "sweep_nope"]  # one named twice, one that does not exist

    results = api.client().cancel_many(asked)

    assert [r["id"] for r in results] == asked
    by_position = {i: r for i, r in enumerate(results)}
    assert "already ended" in by_position[5]["error"]
    assert "already ended" in by_position[len(ids)]["error"]  # the second time
    assert "no run" in by_position[len(ids) + 1]["error"]
    canceled = [r for i, r in by_position.items() if i < len(ids) and i != 5]
    assert {r["status"] for r in canceled} == {"Canceled"}
    after = stored(engine, ids)
    assert after[ids[5]].status == RunStatus.COMPLETED
    assert all(after[i].status == RunStatus.CANCELED for i in ids if i != ids[5])
    assert counters_agree(engine)
    assert audited(api) >= {i for i in ids if i != ids[5]}
    assert ids[5] not in audited(api)


def test_a_parent_cancelled_ends_its_thousand_children_and_theirs(
    api: Stack, engine: Engine, client: redis.Redis
) -> None:
    with Session(engine) as session:
        parent = runs.start_interactive(session, "sweep", None, "admin")
        now = utcnow()
        template: dict[str, Any] = {
            "experiment_id": parent.experiment_id,
            "status": RunStatus.RUNNING,
            "script": "child",
            "submitted_by": "admin",
            "created_at": now,
            "not_started_at": now,
            "running_at": now,
            "root_run_id": parent.id,
        }
        children = [f"{parent.id}_c{i:04d}" for i in range(MANY)]
        grandchildren = [f"{c}_g" for c in children[:600]]
        rows = [{**template, "id": c, "parent_run_id": parent.id} for c in children]
        rows += [{**template, "id": g, "parent_run_id": g[:-2]} for g in grandchildren]
        rows[1]["status"] = RunStatus.COMPLETED  # ended before: keeps its own end
        runs.insert_rows(session, Run, rows)
        session.commit()
        parent_id = parent.id

    assert api.client().cancel(parent_id)["status"] == "Canceled"

    after = stored(engine, [*children, *grandchildren])
    own_end = children[1]
    assert after[own_end].status == RunStatus.COMPLETED
    assert after[own_end].failure_reason is None
    # The children of a child that ended first went with it, or not, back then: not now.
    assert after[f"{own_end}_g"].status == RunStatus.RUNNING
    ended = [r for i, r in after.items() if not i.startswith(own_end)]
    assert len(ended) == MANY - 1 + 600 - 1
    assert {r.status for r in ended} == {RunStatus.CANCELED}
    assert {r.failure_reason for r in ended} == {"parent Canceled"}
    assert all(r.canceled_at is not None for r in ended)
    assert counters_agree(engine)


def test_the_cli_cancels_a_whole_queue(api: Stack, engine: Engine) -> None:
    cluster, ids = array_of(api, engine, 700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(RUNYARD_URL=api.url, RUNYARD_TOKEN=ADMIN_TOKEN)

    done = subprocess.run(
        runyard("cancel", "--all-queued", cluster, "--json"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert sorted(r["id"] for r in results) == sorted(ids)
    assert {r["status"] for r in results} == {"Canceled"}
    assert {r.status for r in stored(engine, ids).values()} == {RunStatus.CANCELED}
    assert counters_agree(engine)


def test_deleting_a_cluster_by_force_cancels_its_queue_and_keeps_its_history(
    api: Stack, engine: Engine
) -> None:
    cluster, ids = array_of(api, engine, 700)
    done = ids[:100]  # history: runs that ended before the delete
    with Session(engine) as session:
        session.execute(
            update(Run)
            .where(col(Run.id).in_(done))
            .values(status=RunStatus.COMPLETED, completed_at=utcnow())
        )
        session.commit()

    answer = api.client().delete_cluster(cluster, force=True)

    assert sorted(r["id"] for r in answer["data"]) == sorted(ids[100:])
    assert {r["status"] for r in answer["data"]} == {"Canceled"}
    after = stored(engine, ids)
    assert {r.cluster for r in after.values()} == {None}
    assert {after[i].status for i in done} == {RunStatus.COMPLETED}
    assert {after[i].status for i in ids[100:]} == {RunStatus.CANCELED}
    assert counters_agree(engine)
    assert cluster not in [c["name"] for c in api.client().list_clusters()]
