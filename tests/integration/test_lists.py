"""Lists a page at a time, over REST and the CLI, on SQLite and PostgreSQL: a queue of 250
runs read page after page gives every run once, in start order, with its position in the
whole queue and its pending reason, even while runs are cancelled and reprioritised
between pages; cancelling a whole queue cancels every run of it, not one page; a cursor
that is not one the service gave out is refused with a reason."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis
from sqlmodel import Session

from runyard import api_paths
from runyard.errors import RunyardError
from store.db import make_engine
from store.models import Run, RunProperty, RunTag
from tests.support.database import heartbeat, make_cluster, queue_run
from tests.support.services import (
    ADMIN_TOKEN,
    RedisServer,
    Stack,
    runyard,
    unique,
)

QUEUED = 250
NODES = 2


@pytest.fixture
def api(
    database_url: str, redis_service: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The API alone (no scheduler: what is queued stays queued) on the database."""
    root = tmp_path_factory.mktemp("lists")
    url = database_url if database_url.startswith("postgresql") else f"sqlite:///{root}/db.sqlite"
    live = Stack(root=root, redis=redis_service, database_url=url)
    live.start_api()
    try:
        yield live
    finally:
        live.stop()


def queue_of(stack: Stack, count: int) -> tuple[str, list[str]]:
    """A cluster of ``NODES`` nodes with one live worker of ``NODES`` slots and ``count``
    runs waiting in it (written through the store, as the API would: submits over REST are
    rate limited), in start order: the ids by priority, then time of submit."""
    cluster = unique("q")[:30].lower().replace("_", "-")
    engine = make_engine(stack.database_url)
    try:
        with Session(engine) as session:
            make_cluster(session, cluster, nodes=NODES)
            start = queue_run(session, cluster)  # pins a time every other run is set after
            first = session.get(Run, start)
            assert first is not None
            ids = []
            for i in range(count - 1):
                priority = 5 if i % 10 == 0 else 0
                created = first.created_at + timedelta(seconds=i + 1)
                run_id = queue_run(session, cluster, priority=priority, created_at=created)
                ids.append((priority, i + 1, run_id))
    finally:
        engine.dispose()
    ids.append((0, 0, start))
    ordered = [run_id for _, _, run_id in sorted(ids, key=lambda t: (-t[0], t[1]))]
    client = redis.Redis.from_url(stack.redis.url)
    heartbeat(client, cluster, slots=NODES, worker=f"w-{cluster}")
    client.close()
    return cluster, ordered


def reason(position: int) -> str:
    if position <= NODES:
        return "about to start"
    ahead = position - 1 - NODES
    busy = f"all {NODES} node(s) busy"
    return busy if ahead == 0 else f"waiting behind {ahead} run(s); {busy}"


def test_paging_a_queue_gives_every_run_once_in_start_order_with_its_place(api: Stack) -> None:
    cluster, ordered = queue_of(api, QUEUED)
    client = api.client()
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.cluster_runs_page(cluster, "queued", limit=100, cursor=cursor)
        assert page["count"] == QUEUED
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [r["id"] for r in seen] == ordered
    assert [r["position"] for r in seen] == list(range(1, QUEUED + 1))
    assert [r["pending_reason"] for r in seen] == [reason(p) for p in range(1, QUEUED + 1)]
    assert seen[100]["position"] == 101  # the first run of page 2


def test_runs_pages_newest_first_give_each_waiting_run_its_place_in_the_whole_queue(
    api: Stack,
) -> None:
    """GET /runs lists newest first, so a page holds waiting runs spread over the queue
    (every tenth one jumped ahead by priority): each still shows its place in the whole
    queue and the reason it waits, page after page, filtered or not."""
    cluster, ordered = queue_of(api, QUEUED)
    client = api.client()
    place = {run_id: i + 1 for i, run_id in enumerate(ordered)}
    for filters in ({"cluster": cluster}, {"cluster": cluster, "status": "Queued"}):
        seen = list(client.pages("/runs", page=37, **filters))
        assert sorted(r["id"] for r in seen) == sorted(ordered)
        assert [r["position"] for r in seen] == [place[r["id"]] for r in seen]
        assert [r["pending_reason"] for r in seen] == [reason(place[r["id"]]) for r in seen]
    one = client.runs_page(cluster=cluster, limit=1)["data"][0]  # a single run on a page
    assert (one["position"], one["pending_reason"]) == (QUEUED, reason(QUEUED))


def test_runs_filtered_by_tags_and_properties_are_exactly_those_set_page_after_page(
    api: Stack,
) -> None:
    """A tag filter matches the whole value, past the 200 characters its index holds; two
    filters together (one read from its index, one probed per run) match runs with both."""
    cluster, ordered = queue_of(api, 120)
    long_value = "x" * 250
    engine = make_engine(api.database_url)
    try:
        with Session(engine) as session:
            for i, run_id in enumerate(ordered):
                value = long_value if i % 3 == 0 else long_value[:-1] + "y"
                session.add(RunTag(run_id=run_id, key="sweep", value=value))
                if i % 4 == 0:
                    session.add(RunTag(run_id=run_id, key="best", value=None))
                if i % 5 == 0:
                    session.add(RunProperty(run_id=run_id, key="seed", value="7"))
            session.commit()
    finally:
        engine.dispose()
    client = api.client()

    def listed(**filters: str) -> list[str]:
        return [r["id"] for r in client.pages("/runs", page=7, cluster=cluster, **filters)]

    exact = listed(tags=json.dumps({"sweep": long_value}))
    assert sorted(exact) == sorted(ordered[::3])
    both = listed(tags=json.dumps({"sweep": long_value, "best": None}))
    assert sorted(both) == sorted(ordered[::12])
    with_property = listed(tags=json.dumps({"best": None}), properties='{"seed": "7"}')
    assert sorted(with_property) == sorted(ordered[::20])
    page = client.runs_page(cluster=cluster, tags=json.dumps({"sweep": long_value}), limit=5)
    assert page["count"] is None and len(page["data"]) == 5


def test_an_experiments_runs_filter_over_the_whole_experiment_page_after_page(
    api: Stack,
) -> None:
    """GET /experiments/{e}/runs?status=&cluster=&tags=: what matches anywhere in the
    experiment, newest first and a page at a time (the Studio's table filters)."""
    cluster, ordered = queue_of(api, 60)
    engine = make_engine(api.database_url)
    try:
        with Session(engine) as session:
            for run_id in ordered[:7]:
                session.add(RunTag(run_id=run_id, key="best", value="yes"))
            session.commit()
    finally:
        engine.dispose()
    client = api.client()
    client.cancel(ordered[3])
    path = "/experiments/mnist/runs"

    mine = list(client.pages(path, page=9, cluster=cluster))
    assert sorted(r["id"] for r in mine) == sorted(ordered)
    created = [r["created_at"] for r in mine]
    assert created == sorted(created, reverse=True)
    queued = client.page(path, limit=500, cluster=cluster, status="Queued")
    assert sorted(r["id"] for r in queued["data"]) == sorted(set(ordered) - {ordered[3]})
    assert queued["count"] is None  # a cluster filter: no counter holds it
    best = list(client.pages(path, page=2, cluster=cluster, tags='{"best": "yes"}'))
    assert sorted(r["id"] for r in best) == sorted(ordered[:7])
    assert all(r["tags"] == {"best": "yes"} for r in best)
    canceled = client.page(path, status="Canceled", cluster=cluster)
    assert [r["id"] for r in canceled["data"]] == [ordered[3]]
    by_status = client.page(path, status="Canceled", limit=1)
    assert by_status["count"] is not None and by_status["count"] >= 1  # from the counters
    bad = httpx.get(
        f"{api.url}/api/v1{path}",
        params={"tags": "[1]"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert bad.status_code == 422 and "tags must be a JSON object" in bad.text


def test_runs_cancelled_or_reprioritised_between_pages_leave_the_others_once_each(
    api: Stack,
) -> None:
    cluster, ordered = queue_of(api, QUEUED)
    client = api.client()
    first = client.cluster_runs_page(cluster, "queued", limit=100)
    changed = {ordered[10], ordered[150], ordered[200], ordered[120]}
    client.cancel(ordered[10])  # seen already
    client.cancel(ordered[150])  # not seen yet
    front = {"move_to_front": True}
    client.json("PATCH", api_paths.run(ordered[200]), json=front)  # jumps behind the cursor
    client.json("PATCH", api_paths.run(ordered[120]), json={"priority": -5})  # to the back
    rest: list[dict[str, Any]] = []
    cursor = first["next_cursor"]
    while cursor is not None:
        page = client.cluster_runs_page(cluster, "queued", limit=100, cursor=cursor)
        rest += page["data"]
        cursor = page["next_cursor"]

    ids = [r["id"] for r in first["data"] + rest]
    stayed = [i for i in ordered if i not in changed]
    assert [i for i in ids if i not in changed] == stayed
    assert len(ids) == len(set(ids))
    # positions after a change are those of the queue as it is now
    now = [r["id"] for r in client.cluster_runs(cluster, "queued")]
    positions = {r["id"]: r["position"] for r in rest}
    assert all(positions[i] == now.index(i) + 1 for i in positions)


def test_cancel_queued_cancels_the_whole_queue_not_one_page(api: Stack) -> None:
    cluster, ordered = queue_of(api, QUEUED)
    client = api.client()

    results = client.cancel_queued(cluster)

    assert sorted(r["id"] for r in results) == sorted(ordered)
    assert all(r["status"] == "Canceled" for r in results)
    assert client.cluster_runs_page(cluster, "queued")["count"] == 0
    history = client.page(f"/clusters/{cluster}/history", limit=500)
    assert history["count"] == QUEUED and history["next_cursor"] is None
    cancels = list(client.pages("/audit", page=100, action="run.cancel"))
    assert {e["target"] for e in cancels} >= set(ordered)
    assert len({e["id"] for e in cancels}) == len(cancels)  # each event once, across pages


def test_every_list_follows_its_cursor_to_the_end(api: Stack) -> None:
    cluster, ordered = queue_of(api, 120)
    client = api.client()
    runs = list(client.pages("/runs", page=50, cluster=cluster))
    assert sorted(r["id"] for r in runs) == sorted(ordered)
    created = [r["created_at"] for r in runs]
    assert created == sorted(created, reverse=True)  # newest first
    first = client.runs_page(cluster=cluster, limit=50)
    assert first["count"] == 120 and first["next_cursor"]
    tagged = client.runs_page(cluster=cluster, tags='{"none": null}')
    assert tagged["count"] is None and tagged["data"] == []
    experiments = list(client.pages("/experiments", page=1))
    assert "mnist" in [e["name"] for e in experiments]
    exp_runs = client.page("/experiments/mnist/runs", limit=10)
    assert exp_runs["count"] >= 120 and len(exp_runs["data"]) == 10
    assert cluster in [c["name"] for c in client.list_clusters()]


def test_tokens_and_environments_page_by_cursor_over_rest_the_client_and_the_cli(
    api: Stack,
) -> None:
    client = api.client()
    prefix = unique("pg")[:20].lower().replace("_", "-")
    made = [client.create_token(name=f"{prefix}-{i}", role="viewer")["id"] for i in range(5)]
    client.revoke_token(made[1])
    names = [f"{prefix}-env-{i}" for i in range(5)]
    for name in names:
        for version in range(1, 4 if name == names[2] else 2):
            python = {"user_managed_dependencies": True, "interpreter_path": f"/py/{version}"}
            client.register_environment(name, {"name": name, "python": python})

    def every(path: str, **params: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = client.page(path, limit=2, cursor=cursor, **params)
            assert len(page["data"]) <= 2
            found += page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                return found

    tokens = [t["id"] for t in every(api_paths.TOKENS) if t["name"].startswith(prefix)]
    assert tokens == [made[0], *made[2:]]  # oldest first, the revoked one left out
    revoked_too = every(api_paths.TOKENS, include_revoked="true")
    assert [t["id"] for t in revoked_too if t["name"].startswith(prefix)] == made
    assert [t["id"] for t in client.list_tokens(page=2) if t["name"].startswith(prefix)] == tokens
    first = client.tokens_page(limit=1)
    assert first["count"] == len(client.list_tokens()) and first["next_cursor"]

    latest = [(e["name"], e["version"]) for e in every(api_paths.ENVIRONMENTS)]
    assert [v for v in latest if v[0].startswith(prefix)] == [
        (n, 3 if n == names[2] else 1) for n in names
    ]
    assert client.environments_page(limit=1)["count"] == len(latest)
    versions = every(api_paths.environment_versions(names[2]))
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert [v["version"] for v in client.environment_versions(names[2], page=1)] == [3, 2, 1]

    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(RUNYARD_URL=api.url, RUNYARD_TOKEN=ADMIN_TOKEN, COLUMNS="400")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            runyard(*args), env=env, capture_output=True, text=True, timeout=60, check=False
        )

    shown = cli("env", "list", "--limit", "1")
    assert shown.returncode == 0, shown.stderr
    assert f"showing 1 of {len(latest)}; next page: --cursor " in shown.stdout
    cursor = shown.stdout.split("--cursor ")[1].split()[0]
    rest = cli("env", "list", "--limit", "500", "--cursor", cursor, "--json")
    assert rest.returncode == 0, rest.stderr
    assert [e["name"] for e in json.loads(rest.stdout)] == [n for n, _ in latest[1:]]
    listed = cli("token", "list", "--all", "--json")
    assert [t["id"] for t in json.loads(listed.stdout) if t["name"].startswith(prefix)] == made
    one = cli("token", "list", "-n", "1")
    assert one.returncode == 0 and "next page: --cursor " in one.stdout
    bad = cli("token", "list", "--cursor", "nonsense")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "cursor" in bad.stderr


@pytest.mark.parametrize(
    "cursor",
    ["not-a-cursor!", "WyJydW5zIiwwXQ", "WyJleHBlcmltZW50cyIsMCwiYSJd", "WyJydW5zIiw5LCJ4Il0"],
)
def test_a_cursor_the_service_did_not_give_is_refused_with_a_reason(
    api: Stack, cursor: str
) -> None:
    response = httpx.get(
        f"{api.url}/api/v1/runs",
        params={"cursor": cursor},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 422
    assert "cursor" in response.text
    with pytest.raises(RunyardError, match="cursor"):
        api.client().runs_page(cursor=cursor)


def test_the_cli_shows_one_page_and_says_how_to_get_the_next(api: Stack) -> None:
    cluster, ordered = queue_of(api, 130)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(RUNYARD_URL=api.url, RUNYARD_TOKEN=ADMIN_TOKEN, COLUMNS="400")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            runyard(*args), env=env, capture_output=True, text=True, timeout=60, check=False
        )

    shown = cli("runs", "--cluster", cluster, "--status", "queued")
    assert shown.returncode == 0, shown.stderr
    assert "showing 100 of 130; next page: --cursor " in shown.stdout
    cursor = shown.stdout.split("--cursor ")[1].split()[0]
    rest = cli("runs", "--cluster", cluster, "--status", "queued", "--cursor", cursor, "--json")
    assert rest.returncode == 0, rest.stderr
    assert [r["id"] for r in json.loads(rest.stdout)] == ordered[100:]
    every = cli("runs", "--cluster", cluster, "--status", "queued", "--all", "--json")
    assert [r["id"] for r in json.loads(every.stdout)] == ordered
    bad = cli("runs", "--cluster", cluster, "--cursor", "nonsense")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "cursor" in bad.stderr
