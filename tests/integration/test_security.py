"""Who may do what: every route by every role, run and worker token scope, revocation,
Studio sessions and CSRF, body and rate limits, and no secret in any log.

The route table below is checked against the live OpenAPI document, so a new route without
an entry here fails ``test_every_route_has_a_rule_in_this_table``.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy

from runyard import snapshot
from tests.support.runs import submit, write
from tests.support.services import (
    ADMIN_TOKEN,
    REDIS_PASSWORD,
    RedisServer,
    Stack,
    unique,
    wait_until,
)

ROLES = ("admin", "member", "viewer", "worker", "run", "anonymous")
READERS = {"admin", "member", "viewer"}
SUBMITTERS = {"admin", "member"}
ADMINS = {"admin"}
EVERYONE = {"admin", "member", "viewer", "worker", "run"}
RATE = 60


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_service: RedisServer) -> Iterator[Stack]:
    live = Stack(
        root=tmp_path_factory.mktemp("secure"),
        redis=redis_service,
        extra_env={
            "RUNYARD_SUBMIT_RATE_LIMIT": f"{RATE}/minute",
            "RUNYARD_MAX_FILE_BYTES": str(64 * 1024),
            "RUNYARD_SNAPSHOT_MAX_BYTES": str(1024 * 1024),
        },
    )
    live.start()
    try:
        yield live
    finally:
        live.stop()


def archive_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class World:
    """Two clusters with a queued run each, an interactive run, and a token per role."""

    stack: Stack
    cluster_a: str
    cluster_b: str
    run_a: str
    run_b: str
    digest_a: str
    digest_b: str
    own_run: str  # the interactive run whose token is the "run" role's
    tokens: dict[str, str]
    drain_worker: str

    def http(self, role: str, **kwargs: Any) -> httpx.Client:
        headers = {}
        if role != "anonymous":
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return httpx.Client(base_url=self.stack.url, headers=headers, timeout=30, **kwargs)

    def queued_run(self) -> str:
        """A fresh queued run (no worker serves cluster A) for destructive calls."""
        return self.submit(self.cluster_a, self.digest_a)["id"]

    def submit(self, cluster: str, digest: str, token: str = ADMIN_TOKEN) -> dict[str, Any]:
        spec = {
            "cluster": cluster,
            "script": "train.py",
            "snapshot_digest": digest,
            "experiment": "security",
        }
        with httpx.Client(base_url=self.stack.url, timeout=30) as http:
            response = http.post(
                "/api/v1/runs",
                data={"spec": json.dumps(spec)},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    admin = stack.client()
    cluster_a, cluster_b, drain_cluster = unique("sec-a"), unique("sec-b"), unique("sec-drain")
    for name in (cluster_a, cluster_b, drain_cluster):
        admin.create_cluster(name, nodes=1)
    runs, digests = [], []
    for cluster in (cluster_a, cluster_b):
        archive = archive_of({"train.py": f"print('{cluster}')\n"})
        created = admin.submit(
            {"cluster": cluster, "script": "train.py", "experiment": "security"}, archive
        )
        runs.append(created["id"])
        digests.append(snapshot.digest_of(archive))
    # run_a as if handed to a worker of cluster A (none runs here): what a worker asks its
    # run token for.
    engine = sqlalchemy.create_engine(f"sqlite:///{stack.root / 'data' / 'runyard.db'}")
    with engine.begin() as db:
        db.execute(
            sqlalchemy.text("UPDATE run SET attempt = 1, dispatched_at = :now WHERE id = :id"),
            {"now": datetime.now(UTC), "id": runs[0]},
        )
    engine.dispose()
    own = admin.json("POST", "/runs/interactive", json={"experiment": "security"})
    worker_name = unique("drainable")
    stack.start_worker(drain_cluster, name=worker_name)
    tokens = {
        "admin": ADMIN_TOKEN,
        "member": stack.make_token("member"),
        "viewer": stack.make_token("viewer"),
        "worker": stack.make_token("worker", cluster_a),
        "run": own["run_token"],
    }
    yield World(
        stack=stack,
        cluster_a=cluster_a,
        cluster_b=cluster_b,
        run_a=runs[0],
        run_b=runs[1],
        digest_a=digests[0],
        digest_b=digests[1],
        own_run=own["id"],
        tokens=tokens,
        drain_worker=worker_name,
    )


# --- the route table ------------------------------------------------------------------------

Call = tuple[str, str, dict[str, Any]]  # method, path, httpx keyword arguments
Builder = Callable[[World], Call]


def _fresh_cluster(world: World) -> str:
    name = unique("tmp")
    world.stack.client().create_cluster(name, nodes=1)
    return name


def _fresh_token(world: World) -> str:
    return world.stack.client().create_token(name=unique("victim"), role="viewer")["id"]


def _fresh_team(world: World) -> str:
    name = unique("sec-team")
    world.stack.client().create_team(name)
    return name


def _fresh_member(world: World) -> str:
    return world.stack.client().create_token(name=unique("joiner"), role="member")["id"]


def _team_with_member(world: World) -> tuple[str, str]:
    team, token = _fresh_team(world), _fresh_member(world)
    world.stack.client().add_team_member(team, token)
    return team, token


def _team_with_quota(world: World) -> tuple[str, str]:
    """A team with a quota on a cluster of its own (no other test's cluster gets quotas)."""
    team, cluster = _fresh_team(world), _fresh_cluster(world)
    world.stack.client().set_team_quota(team, cluster, slots=1)
    return team, cluster


def _built_environment(world: World) -> str:
    """The name of an environment a completed run of cluster A recorded (as its worker would
    report it; no worker runs here)."""
    name = unique("sec-env")
    run_id = world.queued_run()
    engine = sqlalchemy.create_engine(f"sqlite:///{world.stack.root / 'data' / 'runyard.db'}")
    with engine.begin() as db:
        db.execute(
            sqlalchemy.text(
                "UPDATE run SET status = 'Completed', completed_at = :now, "
                "environment_used = :used WHERE id = :id"
            ),
            {"now": datetime.now(UTC), "used": json.dumps({"name": name}), "id": run_id},
        )
    engine.dispose()
    return name


def _event_batch(world: World) -> dict[str, Any]:
    event = {"k": "m", "r": world.own_run, "n": "loss", "v": 0.5, "t": 1.0}
    return {"producer": unique("matrix"), "first_seq": 0, "events": [event]}


# operation id → (who may call it, how to call it)
ROUTES: dict[str, tuple[set[str], Builder]] = {
    "healthz": (EVERYONE | {"anonymous"}, lambda w: ("GET", "/healthz", {})),
    "readyz": (READERS, lambda w: ("GET", "/readyz", {})),
    "list_clusters": (READERS, lambda w: ("GET", "/api/v1/clusters", {})),
    "create_cluster": (
        ADMINS,
        lambda w: ("POST", "/api/v1/clusters", {"json": {"name": unique("new"), "nodes": 1}}),
    ),
    "get_cluster": (READERS, lambda w: ("GET", f"/api/v1/clusters/{w.cluster_a}", {})),
    "update_cluster": (
        ADMINS,
        lambda w: ("PATCH", f"/api/v1/clusters/{w.cluster_a}", {"json": {"description": "x"}}),
    ),
    "delete_cluster": (
        ADMINS,
        lambda w: ("DELETE", f"/api/v1/clusters/{_fresh_cluster(w)}", {}),
    ),
    "list_cluster_runs": (READERS, lambda w: ("GET", f"/api/v1/clusters/{w.cluster_a}/runs", {})),
    "list_cluster_history": (
        READERS,
        lambda w: ("GET", f"/api/v1/clusters/{w.cluster_a}/history", {}),
    ),
    "cancel_cluster_queue": (
        SUBMITTERS,
        lambda w: ("POST", f"/api/v1/clusters/{_fresh_cluster(w)}/cancel-queued", {}),
    ),
    "submit_run": (
        SUBMITTERS,
        lambda w: (
            "POST",
            "/api/v1/runs",
            {
                "data": {
                    "spec": json.dumps(
                        {
                            "cluster": w.cluster_a,
                            "script": "t.py",
                            "snapshot_digest": w.digest_a,
                            "experiment": "security",
                        }
                    )
                }
            },
        ),
    ),
    "submit_run_array": (
        SUBMITTERS,
        lambda w: (
            "POST",
            "/api/v1/runs/array",
            {
                "data": {
                    "spec": json.dumps(
                        {
                            "cluster": w.cluster_a,
                            "script": "t.py",
                            "snapshot_digest": w.digest_a,
                            "experiment": "security",
                            "arguments_list": [["--a"], ["--b"]],
                        }
                    )
                }
            },
        ),
    ),
    "start_interactive_run": (
        SUBMITTERS,
        lambda w: ("POST", "/api/v1/runs/interactive", {"json": {"experiment": "security"}}),
    ),
    "list_runs": (READERS, lambda w: ("GET", "/api/v1/runs", {})),
    "build_environment": (
        SUBMITTERS,
        lambda w: (
            "POST",
            "/api/v1/environment-builds",
            {"json": {"environment": {"name": "security"}, "cluster": w.cluster_a}},
        ),
    ),
    "latest_environment_build": (
        READERS,
        lambda w: (
            "GET",
            "/api/v1/environment-builds/latest",
            {"params": {"name": _built_environment(w)}},
        ),
    ),
    "cancel_runs": (
        SUBMITTERS,
        lambda w: ("POST", "/api/v1/runs/cancel", {"json": {"run_ids": [w.queued_run()]}}),
    ),
    "get_run": (READERS | {"run"}, lambda w: ("GET", f"/api/v1/runs/{w.own_run}", {})),
    "cancel_run": (SUBMITTERS, lambda w: ("POST", f"/api/v1/runs/{w.queued_run()}/cancel", {})),
    "fail_run": (
        SUBMITTERS,
        lambda w: ("POST", f"/api/v1/runs/{w.queued_run()}/fail", {"json": {"error": "x"}}),
    ),
    "update_run": (
        SUBMITTERS,
        lambda w: ("PATCH", f"/api/v1/runs/{w.queued_run()}", {"json": {"move_to_front": True}}),
    ),
    "get_run_logs": (READERS | {"run"}, lambda w: ("GET", f"/api/v1/runs/{w.own_run}/logs", {})),
    "run_events": (READERS | {"run"}, lambda w: ("GET", f"/api/v1/runs/{w.own_run}/events", {})),
    "issue_run_token": (
        ADMINS | {"worker"},
        lambda w: ("POST", f"/api/v1/runs/{w.run_a}/run-token", {"json": {"attempt": 1}}),
    ),
    "get_run_snapshot": (
        READERS | {"worker"},
        lambda w: ("GET", f"/api/v1/runs/{w.run_a}/snapshot", {}),
    ),
    "list_run_files": (
        READERS | {"run"},
        lambda w: ("GET", f"/api/v1/runs/{w.own_run}/files", {}),
    ),
    "upload_run_file": (
        SUBMITTERS | {"run"},
        lambda w: ("PUT", f"/api/v1/runs/{w.own_run}/files/outputs/m.txt", {"content": b"hi"}),
    ),
    "download_run_file": (
        READERS | {"run"},
        lambda w: ("GET", f"/api/v1/runs/{w.own_run}/files/outputs/seed.txt", {}),
    ),
    "has_snapshot": (SUBMITTERS, lambda w: ("HEAD", f"/api/v1/snapshots/{w.digest_a}", {})),
    "get_snapshot": (
        READERS | {"worker"},
        lambda w: ("GET", f"/api/v1/snapshots/{w.digest_a}", {}),
    ),
    "log_events": (
        SUBMITTERS | {"run"},
        lambda w: ("POST", f"/api/v1/runs/{w.own_run}/events", {"json": _event_batch(w)}),
    ),
    "get_metrics": (
        READERS | {"run"},
        lambda w: ("GET", f"/api/v1/runs/{w.own_run}/metrics", {}),
    ),
    "list_metric_names": (
        READERS | {"run"},
        lambda w: ("GET", f"/api/v1/runs/{w.own_run}/metric-names", {}),
    ),
    "get_metric_history": (
        READERS | {"run"},
        lambda w: ("GET", f"/api/v1/runs/{w.own_run}/metrics/seed/history", {}),
    ),
    "get_tags": (READERS | {"run"}, lambda w: ("GET", f"/api/v1/runs/{w.own_run}/tags", {})),
    "get_properties": (
        READERS | {"run"},
        lambda w: ("GET", f"/api/v1/runs/{w.own_run}/properties", {}),
    ),
    "list_experiments": (READERS, lambda w: ("GET", "/api/v1/experiments", {})),
    "list_experiment_runs": (
        READERS,
        lambda w: ("GET", "/api/v1/experiments/security/runs", {"params": {"metric": "seed"}}),
    ),
    "get_experiment": (READERS, lambda w: ("GET", "/api/v1/experiments/security", {})),
    "list_environments": (READERS, lambda w: ("GET", "/api/v1/environments", {})),
    "register_environment": (
        SUBMITTERS,
        lambda w: ("POST", "/api/v1/environments/security", {"json": {"name": "security"}}),
    ),
    "get_environment": (READERS, lambda w: ("GET", "/api/v1/environments/seeded", {})),
    "list_environment_versions": (
        READERS,
        lambda w: ("GET", "/api/v1/environments/seeded/versions", {}),
    ),
    "list_workers": (READERS, lambda w: ("GET", "/api/v1/workers", {})),
    "drain_worker": (
        ADMINS,
        lambda w: ("POST", f"/api/v1/workers/{w.drain_worker}/drain", {}),
    ),
    "create_token": (
        ADMINS,
        lambda w: ("POST", "/api/v1/tokens", {"json": {"name": unique("t"), "role": "viewer"}}),
    ),
    "list_tokens": (ADMINS, lambda w: ("GET", "/api/v1/tokens", {})),
    "revoke_token": (
        ADMINS,
        lambda w: ("POST", f"/api/v1/tokens/{_fresh_token(w)}/revoke", {}),
    ),
    "list_audit_events": (ADMINS, lambda w: ("GET", "/api/v1/audit", {})),
    "get_usage": (READERS, lambda w: ("GET", "/api/v1/usage", {})),
    "list_teams": (READERS, lambda w: ("GET", "/api/v1/teams", {})),
    "create_team": (
        ADMINS,
        lambda w: ("POST", "/api/v1/teams", {"json": {"name": unique("sec-team")}}),
    ),
    "get_team": (READERS, lambda w: ("GET", f"/api/v1/teams/{_fresh_team(w)}", {})),
    "delete_team": (ADMINS, lambda w: ("DELETE", f"/api/v1/teams/{_fresh_team(w)}", {})),
    "add_team_member": (
        ADMINS,
        lambda w: ("PUT", f"/api/v1/teams/{_fresh_team(w)}/members/{_fresh_member(w)}", {}),
    ),
    "remove_team_member": (
        ADMINS,
        lambda w: ("DELETE", "/api/v1/teams/{}/members/{}".format(*_team_with_member(w)), {}),
    ),
    "set_team_quota": (
        ADMINS,
        lambda w: (
            "PUT",
            f"/api/v1/teams/{_fresh_team(w)}/quotas/{_fresh_cluster(w)}",
            {"json": {"slots": 1}},
        ),
    ),
    "clear_team_quota": (
        ADMINS,
        lambda w: ("DELETE", "/api/v1/teams/{}/quotas/{}".format(*_team_with_quota(w)), {}),
    ),
    "list_cluster_quotas": (
        READERS,
        lambda w: ("GET", f"/api/v1/clusters/{w.cluster_a}/quotas", {}),
    ),
    "sign_in": (READERS, lambda w: ("POST", "/api/v1/session", {})),
    "sign_out": (EVERYONE, lambda w: ("DELETE", "/api/v1/session", {})),
    "whoami": (EVERYONE, lambda w: ("GET", "/api/v1/whoami", {})),
    "openapi": (EVERYONE, lambda w: ("GET", "/openapi.json", {})),
}


def _operations(spec: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        op["operationId"]: (method.upper(), path)
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
    }


def test_every_route_has_a_rule_in_this_table(world: World) -> None:
    with world.http("admin") as http:
        spec = http.get("/openapi.json").json()
    found = set(_operations(spec))
    assert found - set(ROUTES) == set(), "routes without an entry in ROUTES"
    assert set(ROUTES) - found - {"openapi"} == set(), "entries for routes that are gone"


@pytest.fixture(scope="module")
def seeded(world: World) -> World:
    """Something for the read routes to find: a metric and a file on the run."""
    with world.http("admin") as http:
        event = {"k": "m", "r": world.own_run, "n": "seed", "v": 1.0, "t": 1.0}
        batch = {"producer": "seed", "first_seq": 0, "events": [event], "wait": True}
        assert http.post(f"/api/v1/runs/{world.own_run}/events", json=batch).status_code == 202
        put = http.put(f"/api/v1/runs/{world.own_run}/files/outputs/seed.txt", content=b"seed")
        assert put.status_code == 200, put.text
        assert http.get(f"/api/v1/runs/{world.own_run}/metric-names").json()["count"] == 1
        seeded = http.post("/api/v1/environments/seeded", json={"name": "seeded"})
        assert seeded.status_code in (200, 201), seeded.text
    return world


def _send(http: httpx.Client, call: Call) -> httpx.Response:
    method, path, kwargs = call
    if path.endswith("/events") and method == "GET":  # SSE: the status line is the answer
        with http.stream(method, path, **kwargs) as response:
            response.read() if response.status_code >= 400 else None
            return response
    return http.request(method, path, **kwargs)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation", sorted(ROUTES))
def test_route_by_role(seeded: World, operation: str, role: str) -> None:
    allowed, build = ROUTES[operation]
    with seeded.http(role) as http:
        response = _send(http, build(seeded))
    if role in allowed:
        assert response.status_code < 400, (operation, role, response.status_code, response.text)
    elif role == "anonymous":
        assert response.status_code == 401, (operation, response.status_code, response.text)
        assert response.request.method == "HEAD" or response.json()["error"] == "Unauthorized"
    else:
        assert response.status_code == 403, (operation, role, response.status_code, response.text)
        assert response.request.method == "HEAD" or response.json()["detail"], "a 403 says why"


def test_metrics_need_a_reader(world: World) -> None:
    for role, expected in [("anonymous", 401), ("worker", 403), ("run", 403), ("viewer", 200)]:
        with world.http(role) as http:
            assert http.get("/metrics").status_code == expected, role


def test_a_bad_or_malformed_token_is_401_with_a_reason(world: World) -> None:
    for header in ["Bearer ryt_not-a-token", "Basic dXNlcjpwYXNz", "Bearer", "Bearer ryr_x.1.f"]:
        with httpx.Client(base_url=world.stack.url, headers={"Authorization": header}) as http:
            response = http.get("/api/v1/runs")
        assert response.status_code == 401, header
        assert response.json()["detail"]


# --- scope ----------------------------------------------------------------------------------


def test_a_worker_token_cannot_fetch_another_clusters_snapshots(world: World) -> None:
    with world.http("worker") as http:
        assert http.get(f"/api/v1/runs/{world.run_a}/snapshot").status_code == 200
        assert http.get(f"/api/v1/snapshots/{world.digest_a}").status_code == 200
        by_run = http.get(f"/api/v1/runs/{world.run_b}/snapshot")
        by_digest = http.get(f"/api/v1/snapshots/{world.digest_b}")
        upload = http.put(f"/api/v1/runs/{world.run_b}/files/outputs/x.txt", content=b"x")
        token = http.post(f"/api/v1/runs/{world.run_b}/run-token", json={"attempt": 1})
    assert by_run.status_code == 403, by_run.text
    assert by_digest.status_code == 403, by_digest.text
    assert upload.status_code == 403, upload.text
    assert token.status_code == 403, token.text
    assert f"does not serve cluster '{world.cluster_b}'" in by_run.json()["detail"]
    assert "serves no run that uses snapshot" in by_digest.json()["detail"]


def test_a_run_token_cannot_write_another_run(world: World) -> None:
    other = world.run_a
    batch = {
        "producer": "forger",
        "first_seq": 0,
        "events": [{"k": "m", "r": other, "n": "loss", "v": 1.0, "t": 1.0}],
    }
    with world.http("run") as http:
        assert http.post(f"/api/v1/runs/{other}/events", json=batch).status_code == 403
        assert http.put(f"/api/v1/runs/{other}/files/outputs/x", content=b"x").status_code == 403
        assert http.post(f"/api/v1/runs/{other}/cancel").status_code == 403
        assert http.get(f"/api/v1/runs/{other}/metrics").status_code == 403
        # Through its own run, an event naming another run is refused too.
        own = http.post(f"/api/v1/runs/{world.own_run}/events", json=batch)
        assert own.status_code == 422, own.text
    with world.http("admin") as http:
        assert http.get(f"/api/v1/runs/{other}/metrics").json()["runs"][other] == {}
        assert http.get(f"/api/v1/runs/{other}").json()["status"] == "Queued"


def test_a_run_token_reaches_its_family_and_submits_only_its_own_children(
    world: World,
) -> None:
    """Azure's children log to their parent or root, and a run submits child runs
    (``submit_child``): a run token reaches its ancestors and descendants, no one else."""
    admin = world.stack.client(world.stack.make_token("member"))  # a budget of its own
    parent = admin.json("POST", "/runs/interactive", json={"experiment": "family"})
    child = admin.json(
        "POST",
        f"/runs/{parent['id']}/events",
        json={
            "producer": "family",
            "first_seq": 0,
            "events": [{"r": parent["id"], "k": "child", "c": parent["id"] + "_1", "t": 1.0}],
            "wait": True,
        },
    )
    assert child["stored"] is True
    child_token = mint_run_token_of(world, parent["id"] + "_1")  # as a child would hold it
    spec = {"script": "t.py", "snapshot_digest": world.digest_a, "experiment": "family"}
    headers = {"Authorization": f"Bearer {child_token}"}
    with httpx.Client(base_url=world.stack.url, headers=headers, timeout=30) as http:
        batch = {"producer": "up", "first_seq": 0, "wait": True, "events": [
            {"k": "m", "r": parent["id"], "n": "from child", "v": 1, "t": 1.0}]}  # fmt: skip
        assert http.post(f"/api/v1/runs/{parent['id']}/events", json=batch).status_code == 202
        metrics = http.get(f"/api/v1/runs/{parent['id']}/metrics").json()["runs"][parent["id"]]
        assert [p[2] for p in metrics["from child"]["points"]] == [1]
        assert http.get(f"/api/v1/runs/{world.run_a}").status_code == 403
        for parent_id, expected in ((parent["id"] + "_1", 201), (world.run_a, 403), (None, 403)):
            body = {**spec, "cluster": world.cluster_a, "parent_run_id": parent_id}
            response = http.post("/api/v1/runs", data={"spec": json.dumps(body)})
            assert response.status_code == expected, response.text
    assert admin.get_run(parent["id"] + "_1")["status"] == "Running"
    (submitted,) = admin.list_runs(parent=parent["id"] + "_1")
    assert submitted["cluster"] == world.cluster_a


def mint_run_token_of(world: World, run_id: str) -> str:
    """A run token for ``run_id``, signed with the API's key (kept in its data folder)."""
    from store.tokens import mint_run_token

    key = (world.stack.root / "data" / "secret_key").read_text().strip().encode()
    return mint_run_token(key, run_id, 0)


def test_a_run_token_stops_working_when_its_run_ends(world: World) -> None:
    admin = world.stack.client()
    run = admin.json("POST", "/runs/interactive", json={"experiment": "security"})
    token = run["run_token"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=world.stack.url, headers=headers, timeout=30) as http:
        assert http.get(f"/api/v1/runs/{run['id']}").status_code == 200
        admin.cancel(run["id"])
        response = http.get(f"/api/v1/runs/{run['id']}")
    assert response.status_code == 401
    assert "has ended" in response.json()["detail"]


def test_a_submitted_run_holds_only_its_own_token(world: World, tmp_path: Path) -> None:
    """The script runs under a real worker and tries its token on another run."""
    stack = world.stack
    cluster = unique("sec-run")
    stack.client().create_cluster(cluster, nodes=1)
    victim = world.run_a
    folder = write(
        tmp_path / "src",
        {
            "probe.py": (
                "import json, os, urllib.request\n"
                "token = os.environ['RUNYARD_TOKEN']\n"
                "assert token.startswith('ryr_'), 'a run holds a run token'\n"
                "url = os.environ['RUNYARD_URL'] + '/api/v1/runs/'\n"
                "def call(method, path, body=None):\n"
                "    data = json.dumps(body).encode() if body is not None else None\n"
                "    request = urllib.request.Request(url + path, data=data, method=method,\n"
                "        headers={'Authorization': 'Bearer ' + token,\n"
                "                 'Content-Type': 'application/json'})\n"
                "    try:\n"
                "        return urllib.request.urlopen(request).status\n"
                "    except urllib.error.HTTPError as exc:\n"
                "        return exc.code\n"
                f"victim = {victim!r}\n"
                "own = os.environ['RUNYARD_RUN_ID']\n"
                "batch = {'producer': 'x', 'first_seq': 0, 'events': [\n"
                "    {'k': 'metric', 'r': victim, 'n': 'loss', 'v': 1.0, 't': 1.0}]}\n"
                "codes = {\n"
                "    'metrics': call('POST', victim + '/events', batch),\n"
                "    'file': call('PUT', victim + '/files/outputs/evil.txt', 'x'),\n"
                "    'cancel': call('POST', victim + '/cancel'),\n"
                "    'read_other': call('GET', victim),\n"
                "    'read_own': call('GET', own),\n"
                "    'list_runs': call('GET', ''),\n"
                "}\n"
                "os.makedirs('outputs', exist_ok=True)\n"
                "json.dump({'codes': codes, 'token': token}, open('outputs/probe.json', 'w'))\n"
            )
        },
    )
    world.stack.start_worker(cluster)
    run = submit(stack.url, folder, "probe.py", cluster, experiment="security")
    run.wait_for_completion()
    assert run.get_status() == "Completed", run.get_details().get("failure_reason")
    run.download_file("outputs/probe.json", str(tmp_path / "probe.json"))
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["codes"] == {
        "metrics": 403,
        "file": 403,
        "cancel": 403,
        "read_other": 403,
        "read_own": 200,
        "list_runs": 403,
    }
    with httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {probe['token']}"}
    ) as http:
        after = http.get(f"/api/v1/runs/{run.id}")
    assert after.status_code == 401 and "has ended" in after.json()["detail"]


def test_a_revoked_token_is_refused_at_once(world: World) -> None:
    admin = world.stack.client()
    created = admin.create_token(name=unique("leaked"), role="member")
    headers = {"Authorization": f"Bearer {created['token']}"}
    with httpx.Client(base_url=world.stack.url, headers=headers) as http:
        assert http.get("/api/v1/runs").status_code == 200
        admin.revoke_token(created["id"])
        refused = http.get("/api/v1/runs")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


def test_an_expired_token_is_refused(world: World) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    with world.http("admin") as http:
        created = http.post(
            "/api/v1/tokens", json={"name": unique("brief"), "role": "viewer", "expires_at": soon}
        ).json()
        past = http.post(
            "/api/v1/tokens",
            json={"name": unique("old"), "role": "viewer", "expires_at": "2020-01-01T00:00:00Z"},
        )
    assert past.status_code == 422 and "past" in past.json()["detail"]
    headers = {"Authorization": f"Bearer {created['token']}"}
    with httpx.Client(base_url=world.stack.url, headers=headers) as http:
        assert http.get("/api/v1/runs").status_code == 200
        wait_until(lambda: http.get("/api/v1/runs").status_code == 401, 10, 0.2, what="expiry")
        assert "expired" in http.get("/api/v1/runs").json()["detail"]


def test_token_secrets_are_shown_once_and_stored_hashed(world: World) -> None:
    admin = world.stack.client()
    created = admin.create_token(name=unique("once"), role="viewer")
    listed = [t for t in admin.list_tokens() if t["id"] == created["id"]]
    assert listed and "token" not in listed[0]
    database = (world.stack.root / "data" / "runyard.db").read_bytes()
    assert created["token"].encode() not in database
    assert ADMIN_TOKEN.encode() not in database


def test_bad_token_requests_are_refused_and_change_nothing(world: World) -> None:
    def names(rows: list[dict[str, Any]]) -> set[str]:
        return {r["name"] for r in rows}

    with world.http("admin") as http:
        for body in [
            {"name": "w", "role": "worker"},  # a worker token needs clusters
            {"name": "v", "role": "viewer", "clusters": ["a1"]},
            {"name": "x", "role": "root"},
            {"name": "has space", "role": "viewer"},
        ]:
            response = http.post("/api/v1/tokens", json=body)
            assert response.status_code == 422, body
            assert body["name"] not in names(http.get("/api/v1/tokens").json()["data"]), body
        assert http.post("/api/v1/tokens/tok_nope/revoke").status_code == 404


# --- attribution and audit ------------------------------------------------------------------


def test_submissions_are_attributed_and_audited(world: World) -> None:
    member = world.stack.client().create_token(name=unique("alice"), role="member")
    run = world.submit(world.cluster_a, world.digest_a, token=member["token"])
    assert run["submitted_by"] == member["name"]
    with httpx.Client(
        base_url=world.stack.url, headers={"Authorization": f"Bearer {member['token']}"}
    ) as http:
        assert http.post(f"/api/v1/runs/{run['id']}/cancel").status_code == 200
        assert http.get("/api/v1/audit").status_code == 403  # admins only
    with world.http("admin") as http:
        events = http.get("/api/v1/audit", params={"actor": member["name"]}).json()["data"]
        created = http.get("/api/v1/audit", params={"action": "token.create"}).json()["data"]
    assert [(e["action"], e["target"]) for e in events] == [
        ("run.cancel", run["id"]),
        ("run.submit", run["id"]),
    ]
    assert all(e["at"] for e in events)
    assert any(e["detail"]["name"] == member["name"] for e in created)


# --- Studio sessions and CSRF ---------------------------------------------------------------


def test_a_studio_session_is_an_httponly_samesite_cookie(world: World) -> None:
    with world.http("member") as http:
        response = http.post("/api/v1/session")
    assert response.status_code == 200
    cookies = response.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("runyard_session="))
    assert "HttpOnly" in session and "SameSite=strict" in session
    assert response.json()["csrf_token"]


def _signed_in(world: World, role: str) -> tuple[httpx.Client, str]:
    with world.http(role) as http:
        response = http.post("/api/v1/session")
    browser = httpx.Client(base_url=world.stack.url, cookies=response.cookies, timeout=30)
    return browser, response.json()["csrf_token"]


def test_the_studio_session_rejects_a_cross_site_post(world: World) -> None:
    browser, csrf = _signed_in(world, "member")
    with browser:
        assert browser.get("/api/v1/runs").status_code == 200  # reads need no CSRF token
        target = world.queued_run()
        forged = browser.post(
            f"/api/v1/runs/{target}/cancel", headers={"Origin": "https://evil.example"}
        )
        assert forged.status_code == 403, forged.text
        no_token = browser.post(f"/api/v1/runs/{target}/cancel")
        assert no_token.status_code == 403, no_token.text
        wrong_site = browser.post(
            f"/api/v1/runs/{target}/cancel",
            headers={"Origin": "https://evil.example", "X-CSRF-Token": csrf},
        )
        assert wrong_site.status_code == 403
        assert world.stack.client().get_run(target)["status"] == "Queued"  # nothing changed
        same_site = browser.post(
            f"/api/v1/runs/{target}/cancel",
            headers={"Origin": world.stack.url, "X-CSRF-Token": csrf},
        )
        assert same_site.status_code == 200, same_site.text


def test_revoking_a_token_ends_its_studio_sessions(world: World) -> None:
    created = world.stack.client().create_token(name=unique("studio"), role="viewer")
    world.tokens["studio"] = created["token"]
    browser, _ = _signed_in(world, "studio")
    with browser:
        assert browser.get("/api/v1/runs").status_code == 200
        world.stack.client().revoke_token(created["id"])
        assert browser.get("/api/v1/runs").status_code == 401


# --- limits ---------------------------------------------------------------------------------


def test_bodies_over_a_paths_limit_are_413_and_store_nothing(world: World) -> None:
    with world.http("admin") as http:
        name = "outputs/too-big.bin"
        big = http.put(f"/api/v1/runs/{world.own_run}/files/{name}", content=b"x" * 100_000)
        assert big.status_code == 413, big.text

        def chunks() -> Iterator[bytes]:
            for _ in range(20):
                yield b"y" * 10_000

        streamed = http.put(f"/api/v1/runs/{world.own_run}/files/{name}", content=chunks())
        assert streamed.status_code == 413, streamed.text
        names = [f["name"] for f in http.get(f"/api/v1/runs/{world.own_run}/files").json()["data"]]
        assert name not in names
        huge_json = http.post(
            "/api/v1/clusters", json={"name": unique("big"), "description": "z" * 2_000_000}
        )
        assert huge_json.status_code == 413
        spec = json.dumps({"cluster": world.cluster_a, "script": "t.py", "experiment": "s"})
        before = http.get("/api/v1/runs", params={"limit": 1}).json()["count"]
        snapshot_upload = http.post(
            "/api/v1/runs",
            data={"spec": spec},
            files={"snapshot": ("s.tar.gz", b"\0" * 3_000_000, "application/gzip")},
        )
        assert snapshot_upload.status_code == 413
        assert http.get("/api/v1/runs", params={"limit": 1}).json()["count"] == before


def test_submissions_are_rate_limited_per_token(world: World) -> None:
    greedy = world.stack.make_token("member")
    for _ in range(RATE):
        world.submit(world.cluster_a, world.digest_a, token=greedy)
    spec = {
        "cluster": world.cluster_a,
        "script": "t.py",
        "snapshot_digest": world.digest_a,
        "experiment": "security",
    }
    with httpx.Client(
        base_url=world.stack.url, headers={"Authorization": f"Bearer {greedy}"}
    ) as http:
        refused = http.post("/api/v1/runs", data={"spec": json.dumps(spec)})
    assert refused.status_code == 429
    assert "retry in" in refused.json()["detail"]
    world.submit(world.cluster_a, world.digest_a, token=world.stack.make_token("member"))


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/runs",
        "/api/v1/clusters",
        "/api/v1/experiments",
        "/api/v1/tokens",
        "/api/v1/audit",
        "/api/v1/workers",
    ],
)
def test_every_list_has_a_bounded_page(world: World, path: str) -> None:
    with world.http("admin") as http:
        response = http.get(path, params={"limit": 100_000})
    assert response.status_code == 422, path


# --- secrets --------------------------------------------------------------------------------


def test_no_secret_reaches_a_log(world: World) -> None:
    """Every process of this stack has seen the Redis password and the tokens above."""
    secrets_seen = [REDIS_PASSWORD, *world.tokens.values()]
    logs = world.stack.log_files()
    assert len(logs) >= 3
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in secrets_seen:
            assert secret not in text, f"a secret appears in {log.name}"


def test_an_uploaded_page_is_never_served_as_a_page(world: World) -> None:
    """A run's files are untrusted: an .html or .svg must not run script on this origin."""
    with world.http("run") as http:
        for name, body in [
            ("outputs/x.html", b"<script>fetch('/api/v1/tokens')</script>"),
            ("outputs/x.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>"),
        ]:
            assert http.put(f"/api/v1/runs/{world.own_run}/files/{name}", content=body).is_success
            served = http.get(f"/api/v1/runs/{world.own_run}/files/{name}")
            assert served.headers["content-type"] == "application/octet-stream"
            assert served.headers["content-disposition"].startswith("attachment")
            assert served.headers["x-content-type-options"] == "nosniff"
            assert "sandbox" in served.headers["content-security-policy"]


def test_revoking_a_person_ends_the_run_tokens_of_their_notebook_runs(world: World) -> None:
    member = world.stack.client().create_token(name=unique("notebook"), role="member")
    with httpx.Client(
        base_url=world.stack.url, headers={"Authorization": f"Bearer {member['token']}"}
    ) as http:
        run = http.post("/api/v1/runs/interactive", json={"experiment": "security"}).json()
    headers = {"Authorization": f"Bearer {run['run_token']}"}
    with httpx.Client(base_url=world.stack.url, headers=headers) as http:
        assert http.get(f"/api/v1/runs/{run['id']}").status_code == 200
        world.stack.client().revoke_token(member["id"])
        refused = http.get(f"/api/v1/runs/{run['id']}")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    world.stack.client().cancel(run["id"])
