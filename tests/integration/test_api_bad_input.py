"""Every bad request gets a 4xx with a reason, and changes nothing."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runyard import snapshot
from tests.support.services import ADMIN, Stack, unique

API = "/api/v1"


def snapshots_stored(stack: Stack) -> set[str]:
    folder = stack.root / "data" / "snapshots" / "sha256"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def run_count(http: httpx.Client) -> int:
    return http.get(f"{API}/runs").json()["count"]


def spec(cluster: str, overrides: dict[str, object] | None = None) -> str:
    fields = {"experiment": "bad", "cluster": cluster, "script": "a.py", **(overrides or {})}
    return json.dumps(fields)


def hostile_archive(name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return buffer.getvalue()


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=30, headers=ADMIN) as client:
        yield client


@pytest.fixture
def cluster(stack: Stack) -> str:
    name = unique("bad")
    stack.client().create_cluster(name, nodes=1)
    return name


def good_archive(tmp_path: Path) -> bytes:
    (tmp_path / "a.py").write_text("print(1)\n")
    return snapshot.pack(tmp_path).archive


def test_an_unknown_cluster_is_404_and_queues_nothing(
    stack: Stack, http: httpx.Client, tmp_path: Path
) -> None:
    before, stored = run_count(http), snapshots_stored(stack)
    response = http.post(
        f"{API}/runs",
        data={"spec": spec("no-such-cluster")},
        files={"snapshot": ("s.tar.gz", good_archive(tmp_path))},
    )
    assert response.status_code == 404
    assert response.json() == {
        "error": "ClusterNotFound",
        "detail": "no cluster named 'no-such-cluster'",
        "field": None,
    }
    assert run_count(http) == before
    assert snapshots_stored(stack) == stored


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"script": ""}, "spec.script"),
        ({"script": "../escape.py"}, "spec.script"),
        ({"priority": "high"}, "spec.priority"),
        ({"arguments": "not-a-list"}, "spec.arguments"),
        ({"experiment": "bad name!"}, "spec.experiment"),
        ({"cluster": "Not_A_Cluster"}, "spec.cluster"),
        ({"environment": {"python": "x"}}, "spec.environment.python"),
        ({"environment": {"environment_variables": [1]}}, "spec.environment.environment_variables"),
        ({"environment": {"dockr": {}}}, "spec.environment.dockr"),
        ({"arguments": ["a\u0000b"]}, "spec.arguments"),
        ({"priorty": 5}, "spec.priorty"),
    ],
)
def test_a_malformed_spec_is_422_naming_the_field(
    http: httpx.Client, cluster: str, tmp_path: Path, override: dict[str, object], field: str
) -> None:
    before = run_count(http)
    response = http.post(
        f"{API}/runs",
        data={"spec": spec(cluster, override)},
        files={"snapshot": ("s.tar.gz", good_archive(tmp_path))},
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert run_count(http) == before


def test_a_spec_that_is_not_json_is_422(http: httpx.Client, cluster: str) -> None:
    response = http.post(f"{API}/runs", data={"spec": "{not json"})
    assert response.status_code == 422
    assert response.json()["error"] == "InvalidInput"


def test_a_run_without_a_snapshot_or_known_digest_is_refused(
    http: httpx.Client, cluster: str
) -> None:
    assert http.post(f"{API}/runs", data={"spec": spec(cluster)}).status_code == 422
    unknown = spec(cluster, {"snapshot_digest": "sha256:" + "ab" * 32})
    assert http.post(f"{API}/runs", data={"spec": unknown}).status_code == 404


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.txt", "a/../../outside.txt"])
def test_an_archive_escaping_its_folder_is_400_and_nothing_is_stored(
    stack: Stack, http: httpx.Client, cluster: str, name: str
) -> None:
    before_runs, before_snapshots = run_count(http), snapshots_stored(stack)
    response = http.post(
        f"{API}/runs",
        data={"spec": spec(cluster)},
        files={"snapshot": ("s.tar.gz", hostile_archive(name))},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "UnsafeArchive"
    assert run_count(http) == before_runs
    assert snapshots_stored(stack) == before_snapshots


def test_an_archive_with_a_link_pointing_outside_is_400(
    stack: Stack, http: httpx.Client, cluster: str
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    response = http.post(
        f"{API}/runs",
        data={"spec": spec(cluster)},
        files={"snapshot": ("s.tar.gz", buffer.getvalue())},
    )
    assert response.status_code == 400


def test_a_snapshot_over_the_server_limits_is_413(
    stack: Stack, http: httpx.Client, cluster: str, tmp_path: Path
) -> None:
    # The test stack allows 300 files; pack 301 with a client limit that lets them through.
    for i in range(301):
        (tmp_path / f"f{i:03}.txt").write_text(str(i))
    (tmp_path / "a.py").write_text("print(1)\n")
    packed = snapshot.pack(tmp_path, snapshot.SnapshotLimits(max_files=10_000))
    before = snapshots_stored(stack)
    response = http.post(
        f"{API}/runs",
        data={"spec": spec(cluster)},
        files={"snapshot": ("s.tar.gz", packed.archive)},
    )
    assert response.status_code == 413
    assert "300" in response.json()["detail"]
    assert snapshots_stored(stack) == before


@pytest.mark.parametrize("name", ["A", "-lead", "x", "has_underscore", "a" * 40])
def test_an_invalid_cluster_name_is_422(http: httpx.Client, name: str) -> None:
    response = http.post(f"{API}/clusters", json={"name": name, "nodes": 1})
    assert response.status_code == 422
    assert response.json()["field"] == "name"


def test_a_misspelled_cluster_field_is_422_not_ignored(http: httpx.Client) -> None:
    name = unique("typo")
    response = http.post(f"{API}/clusters", json={"name": name, "node": 4})
    assert response.status_code == 422
    assert response.json()["field"] == "node"
    assert http.get(f"{API}/clusters/{name}").status_code == 404


def test_a_cluster_needs_at_least_one_node_and_a_known_executor(http: httpx.Client) -> None:
    name = unique("n")
    assert http.post(f"{API}/clusters", json={"name": name, "nodes": 0}).status_code == 422
    bad = {"name": name, "executor": "slurm"}
    assert http.post(f"{API}/clusters", json=bad).status_code == 422
    assert http.get(f"{API}/clusters/{name}").status_code == 404


def test_creating_a_cluster_twice_is_409(http: httpx.Client) -> None:
    name = unique("dup")
    assert http.post(f"{API}/clusters", json={"name": name}).status_code == 201
    second = http.post(f"{API}/clusters", json={"name": name, "nodes": 5})
    assert second.status_code == 409
    assert http.get(f"{API}/clusters/{name}").json()["nodes"] == 1


def test_unknown_runs_are_404_everywhere(http: httpx.Client) -> None:
    for method, path in [
        ("GET", "/runs/nope"),
        ("POST", "/runs/nope/cancel"),
        ("GET", "/runs/nope/logs"),
        ("GET", "/runs/nope/files"),
        ("GET", "/clusters/nope/runs"),
    ]:
        response = http.request(method, API + path)
        assert response.status_code == 404, (method, path)
        assert response.json()["detail"]


def test_a_file_upload_cannot_leave_the_runs_folder(
    stack: Stack, http: httpx.Client, cluster: str, tmp_path: Path
) -> None:
    run = stack.client().submit(json.loads(spec(cluster)), good_archive(tmp_path))
    for name in ["../escape.txt", "outputs/../../escape.txt", "%2e%2e/escape.txt"]:
        response = http.put(f"{API}/runs/{run['id']}/files/{name}", content=b"x")
        assert response.status_code in (404, 422), (name, response.status_code)
    assert not (stack.root / "data" / "runs" / "escape.txt").exists()
    assert not (stack.root / "data" / "escape.txt").exists()


def test_file_names_that_cannot_be_stored_are_422(
    stack: Stack, http: httpx.Client, cluster: str, tmp_path: Path
) -> None:
    run = stack.client().submit(json.loads(spec(cluster)), good_archive(tmp_path))
    base = f"{API}/runs/{run['id']}/files"
    assert http.put(f"{base}/outputs/dir/file.txt", content=b"x").status_code == 200
    assert http.put(f"{base}/outputs/dir", content=b"x").status_code == 422
    assert http.put(f"{base}/{'a' * 300}.txt", content=b"x").status_code == 422


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("max_points=2", "max_points should be greater than or equal to 4"),
        ("limit=0", "limit should be greater than or equal to 1"),
        ("start=x", "start should be a valid integer, unable to parse string as an integer"),
    ],
)
def test_a_history_read_out_of_bounds_is_422_naming_the_parameter(
    http: httpx.Client, query: str, detail: str
) -> None:
    run = http.post(f"{API}/runs/interactive", json={"experiment": "bad"}).json()
    response = http.get(f"{API}/runs/{run['id']}/metrics/loss/history?{query}")
    assert response.status_code == 422
    assert response.json()["detail"] == detail
    assert response.json()["field"] == "query." + query.split("=")[0]
