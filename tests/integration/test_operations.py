"""What operators rely on: /metrics, /readyz, draining, Flower, runyard status."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.runs import status_of, submit, write
from tests.support.services import (
    ADMIN,
    Stack,
    free_port,
    redis_server,
    runyard,
    stop_process,
    unique,
    wait_until,
)


def hold_until(flag: Path) -> str:
    return f"import os, time\nwhile not os.path.exists({str(flag)!r}):\n    time.sleep(0.05)\n"


def scrape(stack: Stack) -> dict[str, float]:
    """The /metrics samples as {'name{labels}': value}."""
    text = httpx.get(f"{stack.url}/metrics", timeout=10, headers=ADMIN).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def test_metrics_follow_a_scripted_sequence(stack: Stack, workers, tmp_path: Path) -> None:
    cluster = unique("metered")
    stack.client().create_cluster(cluster, nodes=1)
    flag = tmp_path / "go"
    folder = write(
        tmp_path / "src",
        {
            "hold.py": hold_until(flag),
            "hi.py": "print('hi')\n",
        },
    )
    label = f'cluster="{cluster}"'
    holder = submit(stack.url, folder, "hold.py", cluster).id
    queued = submit(stack.url, folder, "hi.py", cluster).id
    doomed = submit(stack.url, folder, "hi.py", cluster).id
    samples = scrape(stack)
    assert samples[f"runyard_queue_depth{{{label}}}"] == 3
    assert samples[f"runyard_workers_online{{{label}}}"] == 0
    assert samples[f"runyard_submissions_total{{{label}}}"] == 3

    workers.start(cluster, slots=1)
    wait_until(lambda: status_of(stack, holder) == "Running", 30, 0.1, what="the holder")
    stack.client().cancel(doomed)
    wait_until(
        lambda: scrape(stack)[f'runyard_slots{{{label},state="busy"}}'] == 1,
        10,
        0.2,
        what="a busy slot",
    )
    samples = scrape(stack)
    assert samples[f"runyard_queue_depth{{{label}}}"] == 1
    assert samples[f'runyard_runs{{{label},status="Running"}}'] == 1
    assert samples[f'runyard_runs{{{label},status="Canceled"}}'] == 1
    assert samples[f"runyard_cancels_total{{{label}}}"] == 1
    assert samples[f"runyard_workers_online{{{label}}}"] == 1
    assert samples[f'runyard_slots{{{label},state="free"}}'] == 0

    flag.touch()
    wait_until(lambda: status_of(stack, queued) == "Completed", 30, 0.1, what="the queue")
    samples = scrape(stack)
    assert samples[f'runyard_runs{{{label},status="Completed"}}'] == 2
    assert samples[f"runyard_queue_depth{{{label}}}"] == 0
    assert samples[f"runyard_queue_wait_seconds_count{{{label}}}"] == 2
    assert samples[f"runyard_run_duration_seconds_count{{{label}}}"] == 2
    assert samples[f'runyard_queue_wait_seconds_bucket{{{label},le="+Inf"}}'] == 2
    assert "runyard_ingest_lag" in samples


def test_readyz_fails_without_redis_and_recovers(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as redis:
        stack = Stack(root=tmp_path / "stack", redis=redis)
        stack.start()
        try:
            ready = f"{stack.url}/readyz"
            wait_until(
                lambda: httpx.get(ready, headers=ADMIN).status_code == 200, 30, 0.2, what="ready"
            )
            redis.stop()
            response = httpx.get(ready, timeout=10, headers=ADMIN)
            assert response.status_code == 503
            assert response.json()["checks"]["redis"].startswith("unreachable")
            assert httpx.get(f"{stack.url}/healthz").status_code == 200
            redis.start()
            wait_until(
                lambda: httpx.get(ready, timeout=10, headers=ADMIN).status_code == 200,
                30,
                0.2,
                what="ready again",
            )
        finally:
            stack.stop()


def test_a_drained_worker_finishes_its_runs_and_takes_no_new_ones(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("drain")
    client = stack.client()
    client.create_cluster(cluster, nodes=2)
    name = unique("dw")
    workers.start(cluster, slots=2, name=name)
    flag = tmp_path / "go"
    folder = write(
        tmp_path / "src",
        {
            "hold.py": hold_until(flag),
            "hi.py": "print('hi')\n",
        },
    )
    held = submit(stack.url, folder, "hold.py", cluster).id
    wait_until(lambda: status_of(stack, held) == "Running", 30, 0.1, what="the held run")
    result = subprocess.run(
        runyard("worker", "drain", name),
        capture_output=True,
        text=True,
        env={**os.environ, "RUNYARD_URL": stack.url},
        check=True,
    )
    assert "draining" in result.stdout
    wait_until(
        lambda: any(w["id"] == name and w["draining"] for w in client.list_workers()),
        10,
        0.1,
        what="the drain to take",
    )
    later = submit(stack.url, folder, "hi.py", cluster).id
    time.sleep(1.5)
    assert status_of(stack, later) == "Queued"
    assert client.get_run(later)["pending_reason"] == f"no worker serves cluster {cluster}"
    flag.touch()
    wait_until(lambda: status_of(stack, held) == "Completed", 30, 0.1, what="the held run")
    time.sleep(1.0)
    assert status_of(stack, later) == "Queued"  # still: the drained worker took nothing new
    workers.start(cluster, slots=1)
    wait_until(lambda: status_of(stack, later) == "Completed", 30, 0.1, what="a fresh worker")


def test_flower_answers_on_its_port_against_the_broker_behind_its_password(
    stack: Stack,
) -> None:
    port = free_port()
    env = {**stack.env, "FLOWER_BASIC_AUTH": "ops:flower-test-password"}
    flower = subprocess.Popen(
        runyard("flower", "--port", str(port)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=2).text == "OK"
            except httpx.HTTPError:
                return False

        wait_until(answers, 60, 0.5, what="Flower")
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 401
        signed_in = httpx.get(
            f"http://127.0.0.1:{port}/", auth=("ops", "flower-test-password"), timeout=5
        )
        assert signed_in.status_code == 200
        # Neither the broker URL (which may hold a password) nor Flower's own password is on
        # its command line.
        cmdline = Path(f"/proc/{flower.pid}/cmdline").read_bytes()
        assert b"redis://" not in cmdline
        assert b"flower-test-password" not in cmdline
    finally:
        stop_process(flower)


def test_status_shows_clusters_workers_and_queues(stack: Stack, workers) -> None:
    cluster = unique("shown")
    stack.client().create_cluster(cluster, nodes=3)
    name = unique("sw")
    workers.start(cluster, slots=2, name=name)
    env = {**os.environ, "RUNYARD_URL": stack.url}
    text = subprocess.run(
        runyard("status"), capture_output=True, text=True, env=env, check=True
    ).stdout
    assert cluster in text and name in text
    data = json.loads(
        subprocess.run(
            runyard("status", "--json"), capture_output=True, text=True, env=env, check=True
        ).stdout
    )
    shown = next(c for c in data["clusters"] if c["name"] == cluster)
    assert (shown["capacity"], shown["queued"]) == (2, 0)
    listed = json.loads(
        subprocess.run(
            runyard("workers", "--json"), capture_output=True, text=True, env=env, check=True
        ).stdout
    )
    assert any(w["id"] == name and w["slots"] == 2 for w in listed)
