"""The container a Docker run gets, checked without an engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.environments import ContainerPolicy, check_container
from worker.executors.base import ExecutionFailed, ExecutionRequest
from worker.executors.docker import MERGE_STDERR, container_config, device_requests
from worker.slots import SlotPool


def request(
    tmp_path: Path, environment: dict | None = None, gpus: list[str] | None = None, **policy: object
) -> ExecutionRequest:
    return ExecutionRequest(
        run_id="exp_1_abc",
        script="train.py",
        arguments=["--lr", "0.1"],
        environment=environment or {},
        working_dir=tmp_path / "workdir",
        tracking_dir=tmp_path / "tracking",
        context_env={"RUNYARD_RUN_ID": "exp_1_abc"},
        container={"image": "img:1", **policy},
        gpu_ids=gpus or [],
    )


def config(req: ExecutionRequest, sdk: Path | None = Path("/sdk")) -> dict:
    return container_config(req, ContainerPolicy.model_validate(req.container), sdk, "w-1")


def test_runs_are_hardened_by_default(tmp_path: Path) -> None:
    made = config(request(tmp_path))
    assert made["user"] == "1000:1000"
    assert made["cap_drop"] == ["ALL"]
    assert made["security_opt"] == ["no-new-privileges"]
    assert made["read_only"] is True
    assert made["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=1024m"}
    assert made["network_mode"] == "bridge"
    assert made["pids_limit"] == 1024
    assert made["mem_limit"] == made["memswap_limit"] == "4096m"
    assert made["nano_cpus"] == 2_000_000_000
    assert made["init"] is True
    assert made["labels"] == {
        "runyard.run": "exp_1_abc",
        "runyard.worker": "w-1",
        "runyard.service": "",
    }
    assert made["device_requests"] == []


def test_only_the_runs_own_folders_and_the_sdk_are_mounted(tmp_path: Path) -> None:
    made = config(request(tmp_path))
    mounts = {(m["Target"], m["Source"], m["ReadOnly"]) for m in made["mounts"]}
    assert mounts == {
        ("/workspace", str(tmp_path / "workdir"), False),
        ("/runyard/tracking", str(tmp_path / "tracking"), False),
        ("/runyard/sdk", "/sdk", True),
    }
    assert not any("docker.sock" in str(m) for m in made["mounts"])
    assert made["environment"]["PYTHONPATH"] == "/runyard/sdk"
    assert made["environment"]["PYTHONUNBUFFERED"] == "1"
    assert made["working_dir"] == "/workspace"
    assert made["command"] == ["python3", "-c", MERGE_STDERR, "python3", "train.py", "--lr", "0.1"]


def test_the_environment_chooses_image_variables_and_shm(tmp_path: Path) -> None:
    env = {
        "docker": {"base_image": "own:2", "shm_size": "2g"},
        "environment_variables": {"SEED": "1"},
    }
    made = config(request(tmp_path, env, shm_mib=4096))
    assert made["image"] == "own:2"
    assert made["shm_size"] == 2 * 1024**3
    assert made["environment"]["SEED"] == "1"


def test_a_runs_shared_memory_is_capped_by_its_clusters(tmp_path: Path) -> None:
    """Seen: the run's docker.shm_size overrode the cluster's setting."""
    asks = {"docker": {"shm_size": "64g"}}
    assert config(request(tmp_path, asks, shm_mib=256))["shm_size"] == 256 * 1024**2
    assert config(request(tmp_path, {}, shm_mib=512))["shm_size"] == 512 * 1024**2
    assert config(request(tmp_path, {"docker": {"shm_size": "1000"}}))["shm_size"] == 1000


def test_a_built_environment_runs_in_its_image_with_every_hardening_kept(tmp_path: Path) -> None:
    env = {
        "docker": {"base_image": "own:2"},
        "environment_variables": {"PYTHONPATH": "/workspace/lib"},
    }
    req = request(tmp_path, env)
    policy = ContainerPolicy.model_validate(req.container)
    plain = container_config(req, policy, Path("/sdk"), "w-1")
    made = container_config(req, policy, Path("/sdk"), "w-1", built_image="runyard-env:" + "a" * 32)
    assert made["image"] == "runyard-env:" + "a" * 32
    # The SDK first, then the environment's packages, then the run's own path.
    assert made["environment"]["PYTHONPATH"] == "/runyard/sdk:/opt/runyard/env:/workspace/lib"
    unchanged = {k: v for k, v in made.items() if k not in ("image", "environment")}
    assert unchanged == {k: v for k, v in plain.items() if k not in ("image", "environment")}


def test_the_command_runs_the_interpreter_found_in_the_image(tmp_path: Path) -> None:
    req = request(tmp_path, {"python": {"interpreter_path": "python3"}})
    policy = ContainerPolicy.model_validate(req.container)
    made = container_config(req, policy, None, "w-1", "/usr/local/bin/python3")
    python = "/usr/local/bin/python3"
    assert made["command"] == [python, "-c", MERGE_STDERR, python, "train.py", "--lr", "0.1"]


def test_each_relaxation_takes_an_explicit_setting(tmp_path: Path) -> None:
    made = config(
        request(
            tmp_path,
            network="none",
            read_only_root=False,
            drop_capabilities=False,
            no_new_privileges=False,
            memory_mib=512,
        )
    )
    assert made["network_mode"] == "none"
    assert made["read_only"] is False
    assert "cap_drop" not in made and "security_opt" not in made
    assert made["mem_limit"] == "512m"
    with pytest.raises(ValueError, match="allow_root"):
        check_container({"user": "0"})
    assert check_container({"user": "0:0", "allow_root": True})["user"] == "0:0"


def test_gpus_are_requested_by_id_never_all() -> None:
    policy = ContainerPolicy(gpus_per_run=2)
    (gpu,) = device_requests(["2", "3"], policy)
    assert gpu["DeviceIDs"] == ["2", "3"]
    assert gpu["Count"] == 0  # not -1, which means "all"
    assert gpu["Capabilities"] == [["gpu"]]
    assert device_requests(["0", "1"], ContainerPolicy()) == []
    with pytest.raises(ExecutionFailed, match="asks for 2 GPU"):
        device_requests(["0"], policy)


def test_a_nodes_gpus_are_split_between_its_slots() -> None:
    pool = SlotPool(2, ["0", "1", "2", "3"])
    first, second = pool.acquire(), pool.acquire()
    assert (pool.gpus(first), pool.gpus(second)) == (["0", "1"], ["2", "3"])
    pool.release(first)
    assert pool.acquire() == first
    assert SlotPool(3).gpus(0) == []


def test_a_worker_refuses_executors_it_was_not_started_for() -> None:
    from worker.executors import ExecutorUnavailable, Node, executor_named

    with pytest.raises(ExecutorUnavailable, match="does not run 'local' runs"):
        executor_named("local", Node(worker_id="gpu-1", executors=("docker",)))


def test_a_docker_cluster_never_runs_a_script_on_its_hosts() -> None:
    from scheduler.admission import executor_for
    from store.models import Cluster

    docker_cluster = Cluster(name="gpu", executor="docker")
    local_cluster = Cluster(name="cpu", executor="local")
    user_managed = {"python": {"user_managed_dependencies": True}}
    assert executor_for(user_managed, docker_cluster) == "docker"
    assert executor_for(user_managed, local_cluster) == "local"
    assert executor_for({}, local_cluster) == "local"


def test_a_run_that_asks_for_a_container_never_runs_on_a_host() -> None:
    """Seen: docker.enabled with a user-managed Python ran on a local cluster's host."""
    from runyard.errors import NotSupported
    from scheduler.admission import executor_for
    from store.models import Cluster

    local_cluster = Cluster(name="cpu", executor="local")
    allowing = Cluster(name="mixed", executor="local", container_runs=True)
    asks = [
        {"docker": {"base_image": "img"}},
        {"docker": {"enabled": True}, "python": {"user_managed_dependencies": True}},
    ]
    for environment in asks:
        with pytest.raises(NotSupported, match="runs scripts as processes on its hosts"):
            executor_for(environment, local_cluster)
        assert executor_for(environment, allowing) == "docker"
