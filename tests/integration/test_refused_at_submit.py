"""A run that could never start is refused at submit, with the reason, and leaves nothing
behind: no run, no queue entry, no snapshot. (Seen: a Docker run with no image anywhere was
accepted, then failed on the worker with the reason only in `runyard show`.)"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis

from protocol import keys
from runyard import snapshot
from runyard.core import Environment, Experiment, ScriptRunConfig, Workspace
from runyard.errors import BadRequirement, NotSupported
from runyard.status import WAITING
from tests.support.runs import submit, write
from tests.support.services import ADMIN, Stack, free_port, unique

NO_IMAGE = "no Docker image: set environment.docker.base_image or the cluster's container.image"


def snapshots_stored(stack: Stack) -> set[str]:
    folder = stack.root / "data" / "snapshots" / "sha256"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def nothing_queued(stack: Stack, cluster: str) -> bool:
    """No run recorded on the cluster, and nothing in its broker queue."""
    broker = redis.Redis.from_url(stack.redis.url)
    try:
        in_broker = broker.llen(keys.cluster_queue(cluster))
    finally:
        broker.close()
    return stack.client().list_runs(cluster=cluster) == [] and in_broker == 0


@pytest.fixture
def imageless(stack: Stack) -> str:
    """A Docker cluster that names no image of its own."""
    name = unique("noimg")
    stack.client().create_cluster(name, nodes=1, executor="docker")
    return name


def test_the_sdk_is_told_a_docker_run_without_an_image_cannot_run(
    stack: Stack, imageless: str, tmp_path: Path
) -> None:
    folder = write(tmp_path / "src", {"a.py": "print('never')\n"})
    stored = snapshots_stored(stack)
    config = ScriptRunConfig(source_directory=folder, script="a.py", compute_target=imageless)
    with pytest.raises(NotSupported) as refused:
        Experiment(Workspace(url=stack.url), "noimg").submit(config)
    assert refused.value.message == NO_IMAGE
    assert nothing_queued(stack, imageless)
    assert snapshots_stored(stack) == stored


def test_the_rest_api_refuses_a_docker_run_without_an_image_with_400(
    stack: Stack, imageless: str, tmp_path: Path
) -> None:
    (tmp_path / "a.py").write_text("print('never')\n")
    stored = snapshots_stored(stack)
    response = httpx.post(
        f"{stack.url}/api/v1/runs",
        data={"spec": json.dumps({"experiment": "noimg", "cluster": imageless, "script": "a.py"})},
        files={"snapshot": ("s.tar.gz", snapshot.pack(tmp_path).archive)},
        headers=ADMIN,
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == NO_IMAGE
    assert nothing_queued(stack, imageless)
    assert snapshots_stored(stack) == stored


def test_a_local_cluster_running_container_runs_refuses_one_with_no_image(
    stack: Stack, tmp_path: Path
) -> None:
    cluster = unique("mixed")
    stack.client().create_cluster(cluster, nodes=1, container_runs=True)
    env = Environment("boxed")
    env.docker.enabled = True
    config = ScriptRunConfig(
        source_directory=write(tmp_path / "src", {"a.py": "print('never')\n"}),
        script="a.py",
        compute_target=cluster,
        environment=env,
    )
    with pytest.raises(NotSupported, match="no Docker image"):
        Experiment(Workspace(url=stack.url), "noimg").submit(config)
    assert nothing_queued(stack, cluster)


@pytest.mark.parametrize("where", ["run", "cluster", "cluster default environment"])
def test_a_docker_run_with_an_image_from_anywhere_is_queued(
    stack: Stack, imageless: str, tmp_path: Path, where: str
) -> None:
    env = Environment("imaged")
    if where == "run":
        env.docker.base_image = "some-image:1"
    elif where == "cluster":
        stack.client().update_cluster(imageless, container={"image": "some-image:1"})
    else:
        stack.client().update_cluster(
            imageless, environment={"docker": {"base_image": "some-image:1"}}
        )
    folder = write(tmp_path / "src", {"a.py": "print(1)\n"})
    run = submit(stack.url, folder, "a.py", imageless, experiment="noimg", environment=env)
    assert run.get_status() == "Queued"  # no worker serves the cluster: it waits


def test_extra_dockerfile_steps_on_a_cluster_of_host_processes_are_refused(
    stack: Stack, tmp_path: Path
) -> None:
    cluster = unique("hostonly")
    stack.client().create_cluster(cluster, nodes=1)
    env = Environment("with-steps")
    env.docker.base_dockerfile = "FROM debian:bookworm\nRUN mkdir /data\n"
    config = ScriptRunConfig(
        source_directory=write(tmp_path / "src", {"a.py": "print('never')\n"}),
        script="a.py",
        compute_target=cluster,
        environment=env,
    )
    with pytest.raises(NotSupported, match="asks for a Docker container"):
        Experiment(Workspace(url=stack.url), "steps").submit(config)
    assert nothing_queued(stack, cluster)


def test_extra_dockerfile_steps_need_no_other_image(
    stack: Stack, imageless: str, tmp_path: Path
) -> None:
    """A base_dockerfile names its base in its FROM: a cluster with no image takes it."""
    env = Environment("with-steps")
    env.docker.base_dockerfile = "FROM debian:bookworm\nRUN mkdir /data\n"
    config = ScriptRunConfig(
        source_directory=write(tmp_path / "src", {"a.py": "print('queued')\n"}),
        script="a.py",
        compute_target=imageless,
        environment=env,
    )
    run = Experiment(Workspace(url=stack.url), "steps").submit(config)
    assert stack.client().get_run(run.id)["status"] in WAITING


def fetching_dockerfile() -> str:
    """Steps that made the engine itself fetch a URL of the worker's host (the classic
    builder's ``ADD <url>`` ignores the build's ``network none``)."""
    return f"FROM runyard-run-base:bookworm\nADD http://127.0.0.1:{free_port()}/x /x\n"


def test_the_sdk_is_told_a_base_dockerfile_may_not_fetch(
    stack: Stack, imageless: str, tmp_path: Path
) -> None:
    dockerfile = fetching_dockerfile()
    env = Environment("fetching")
    env.docker.base_dockerfile = dockerfile
    config = ScriptRunConfig(
        source_directory=write(tmp_path / "src", {"a.py": "print('never')\n"}),
        script="a.py",
        compute_target=imageless,
        environment=env,
    )
    with pytest.raises(BadRequirement) as refused:
        Experiment(Workspace(url=stack.url), "fetching").submit(config)
    url = dockerfile.split()[3]
    assert refused.value.message == (
        f"base_dockerfile line 2: ADD {url}: builds have no network and fetch nothing; copy "
        "files in with the snapshot, or name Python packages as packages"
    )
    assert nothing_queued(stack, imageless)


def test_the_rest_api_refuses_a_base_dockerfile_that_would_fetch_with_422(
    stack: Stack, imageless: str, tmp_path: Path
) -> None:
    (tmp_path / "a.py").write_text("print('never')\n")
    stored = snapshots_stored(stack)
    spec = {
        "experiment": "fetching",
        "cluster": imageless,
        "script": "a.py",
        "environment": {"name": "fetching", "docker": {"base_dockerfile": fetching_dockerfile()}},
    }
    response = httpx.post(
        f"{stack.url}/api/v1/runs",
        data={"spec": json.dumps(spec)},
        files={"snapshot": ("s.tar.gz", snapshot.pack(tmp_path).archive)},
        headers=ADMIN,
        timeout=30,
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "base_dockerfile line 2: ADD http://127.0.0.1:" in detail and "\n" not in detail
    assert nothing_queued(stack, imageless)
    assert snapshots_stored(stack) == stored
