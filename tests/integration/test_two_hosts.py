"""A worker on another host: it needs only Redis and the API, and when its link is cut its
run is declared lost. Host B is a network namespace joined to this host by a veth pair."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.core import Environment, Experiment, ScriptRunConfig, Workspace
from tests.support.hosts import Link, network_host
from tests.support.services import (
    RedisServer,
    Stack,
    free_port,
    runyard,
    stop_process,
    unique,
    wait_until,
)


@pytest.fixture
def host_b() -> Iterator[Link]:
    with network_host() as link:
        yield link


def test_a_worker_on_another_host_runs_and_is_declared_lost_when_cut_off(
    host_b: Link, tmp_path: Path
) -> None:
    redis = RedisServer(free_port(), tmp_path / "redis", bind=f"127.0.0.1 {host_b.address_a}")
    redis.start()
    stack = Stack(root=tmp_path / "stack", redis=redis, host="0.0.0.0")
    stack.start()
    worker = None
    try:
        cluster = unique("remote")
        stack.client().create_cluster(cluster, nodes=1)
        name = unique("host-b")
        env = {
            **stack.env,
            "RUNYARD_REDIS_URL": redis.url_at(host_b.address_a),
            "RUNYARD_API_URL": f"http://{host_b.address_a}:{stack.port}",
            "RUNYARD_TOKEN": stack.make_token("worker", cluster),
        }
        log = open(tmp_path / "worker-b.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host_b.namespace,
                *runyard("worker", "--cluster", cluster, "--name", name),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = stack.client()
        wait_until(
            lambda: any(w["id"] == name for w in client.list_workers()),
            60,
            0.2,
            what="the worker on host B",
        )

        folder = tmp_path / "src"
        folder.mkdir()
        (folder / "where.py").write_text(
            "import time\n"
            "print('interfaces:', open('/proc/self/net/dev').read().split(), flush=True)\n"
            "time.sleep(300)\n"
        )
        env_local = Environment("local")
        env_local.python.user_managed_dependencies = True
        env_local.python.interpreter_path = sys.executable
        run = Experiment(Workspace(url=stack.url), "remote").submit(
            ScriptRunConfig(
                source_directory=folder,
                script="where.py",
                compute_target=cluster,
                environment=env_local,
            )
        )
        wait_until(
            lambda: client.get_run(run.id)["status"] == "Running", 60, 0.1, what="the run on host B"
        )
        wait_until(lambda: "interfaces:" in client.logs(run.id), 30, 0.1, what="its output")
        assert f"{host_b.there}:" in client.logs(run.id)  # it ran inside host B
        assert client.get_run(run.id)["worker_id"] == name

        host_b.cut()
        # Heartbeats stop: NotResponding after 3 s, Failed 3 s later (test timings).
        wait_until(
            lambda: client.get_run(run.id)["status"] == "NotResponding",
            30,
            0.1,
            what="NotResponding",
        )
        record = wait_until(
            lambda: (r := client.get_run(run.id))["status"] == "Failed" and r,
            30,
            0.1,
            what="Failed",
        )
        assert "node lost" in record["failure_reason"]  # type: ignore[index]
    finally:
        if worker is not None:
            stop_process(worker, timeout=5)
        stack.stop()
        redis.stop()
