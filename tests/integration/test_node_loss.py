"""Node loss, with the liveness settings as shipped: a worker killed outright, or cut off
from the network, has its runs declared NotResponding, then Failed "node lost" (or
requeued and finished elsewhere, where the cluster asks for it); a late report of the lost
attempt never moves the requeued run; and a worker whose runs saturate every CPU is never
taken for lost. Real Redis, a real scheduler and API, real Celery worker processes.

These tests assert outcomes only: how fast is measured by ``python -m bench.node_loss``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from protocol import barriers
from protocol.messages import StateChanged
from protocol.settings import Settings
from protocol.streams import send_to_ingest
from runyard.status import RunStatus
from tests.support.hosts import Link, network_host
from tests.support.runs import submit, wait_for_status, write
from tests.support.services import (
    RedisServer,
    Stack,
    free_port,
    process_alive,
    unique,
    wait_until,
)

# The shipped defaults, not the suite's fast test timings: what an operator gets.
LIVENESS = ("heartbeat_interval", "not_responding_after", "failed_after", "sweep_interval")
DEFAULTS = Settings()
SHIPPED = {f"RUNYARD_{name.upper()}": str(getattr(DEFAULTS, name)) for name in LIVENESS}
# A failure guard only (far above any expected detection time), never an expectation.
GUARD = 120
TERMINAL = {"Completed", "Failed", "Canceled"}

SLEEPER = """\
import os, sys, time
open(sys.argv[1], 'w').write(str(os.getpid()))
print('started', flush=True)
time.sleep(600)
"""

# The first attempt marks itself and sleeps; the next one finishes at once.
RETRY = """\
import os, sys, time
marker = sys.argv[1]
if not os.path.exists(marker):
    open(marker, 'w').write(str(os.getpid()))
    print('first attempt', flush=True)
    time.sleep(600)
print('second attempt finishes', flush=True)
"""

# Keeps more processes busy than there are CPUs (this one plus its spinners) for a while.
SPINNER = """\
import multiprocessing, os, sys, time

def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass

if __name__ == '__main__':
    seconds = float(sys.argv[1])
    count = 2 * (os.cpu_count() or 1)
    spinners = [multiprocessing.Process(target=spin, args=(seconds,)) for _ in range(count)]
    for process in spinners:
        process.start()
    print('spinning', count, 'processes and this one', flush=True)
    spin(seconds)
    for process in spinners:
        process.join()
    print('done', [process.exitcode for process in spinners], flush=True)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_service: RedisServer) -> Iterator[Stack]:
    """API + scheduler with the shipped liveness settings (workers inherit them)."""
    live = Stack(root=tmp_path_factory.mktemp("stack"), redis=redis_service, extra_env=SHIPPED)
    live.start()
    try:
        yield live
    finally:
        live.stop()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (by parent links in /proc), children first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(process) -> None:  # type: ignore[no-untyped-def]
    """The node dies at once: the worker and every process below it, SIGKILLed together."""
    tree = [process.pid, *descendants(process.pid)]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)  # none of them acts while the others are killed
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def wait_terminal(stack: Stack, run_id: str) -> dict:
    return wait_for_status(stack, run_id, TERMINAL, timeout=GUARD)


def test_a_killed_workers_run_becomes_not_responding_then_failed_node_lost(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("killed")
    stack.client().create_cluster(cluster, nodes=1)
    worker = workers.start(cluster)
    pid_file = tmp_path / "pid"
    folder = write(tmp_path / "src", {"sleep.py": SLEEPER})
    run = submit(stack.url, folder, "sleep.py", cluster, str(pid_file))
    wait_for_status(stack, run.id, {"Running"}, timeout=GUARD)
    wait_until(pid_file.exists, GUARD, what="the run's pid")

    kill_tree(worker)

    record = wait_terminal(stack, run.id)
    assert record["status"] == "Failed"
    assert "node lost" in record["failure_reason"]
    assert record["not_responding_at"] is not None  # it was NotResponding on the way
    assert record["not_responding_at"] <= record["failed_at"]
    assert not process_alive(int(pid_file.read_text()))


def test_a_killed_workers_run_is_requeued_and_completed_by_another_worker(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("requeue")
    client = stack.client()
    client.create_cluster(cluster, nodes=2, requeue_on_node_loss=True, max_attempts=2)
    names = [unique("node"), unique("node")]
    processes = {name: workers.start(cluster, name=name) for name in names}
    marker = tmp_path / "attempted"
    folder = write(tmp_path / "src", {"retry.py": RETRY})
    run = submit(stack.url, folder, "retry.py", cluster, str(marker))
    wait_until(marker.exists, GUARD, what="the first attempt")
    holder = wait_for_status(stack, run.id, {"Running"}, timeout=GUARD)["worker_id"]
    (survivor,) = [name for name in names if name != holder]
    # Its output reached the service before the node died (else it dies with the node).
    wait_until(lambda: "first attempt" in client.logs(run.id), GUARD, 0.05, what="its output")

    kill_tree(processes[holder])

    record = wait_terminal(stack, run.id)
    assert record["status"] == "Completed"
    assert record["attempt"] == 2
    assert record["worker_id"] == survivor
    assert record["not_responding_at"] is not None
    log = client.logs(run.id)
    assert log.index("first attempt") < log.index("second attempt finishes")


def test_a_late_report_of_the_lost_attempt_never_moves_the_requeued_run(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """A worker cut off (not dead) may still deliver what it said before it was declared
    lost: its "Starting" and "Running" arrive after the run went back to the queue."""
    cluster = unique("fenced")
    client = stack.client()
    client.create_cluster(cluster, nodes=1, requeue_on_node_loss=True, max_attempts=2)
    lost = unique("lost")
    worker = workers.start(cluster, name=lost)
    marker = tmp_path / "attempted"
    folder = write(tmp_path / "src", {"retry.py": RETRY})
    run = submit(stack.url, folder, "retry.py", cluster, str(marker))
    wait_until(marker.exists, GUARD, what="the first attempt")
    wait_for_status(stack, run.id, {"Running"}, timeout=GUARD)

    kill_tree(worker)
    requeued = wait_until(
        lambda: (
            (r := client.get_run(run.id))["status"] == "Queued" and r["not_responding_at"] and r
        ),
        GUARD,
        0.05,
        what="the run back in its queue",
    )
    assert requeued["attempt"] == 1  # type: ignore[index]

    broker = redis.Redis.from_url(stack.redis.url)
    try:
        barrier = barriers.new()
        late = [
            StateChanged(run_id=run.id, status=status, worker_id=lost, attempt=1)
            for status in (RunStatus.STARTING, RunStatus.RUNNING, RunStatus.COMPLETED)
        ]
        send_to_ingest(broker, [*late, barrier])
        assert barriers.wait(broker, barrier)  # the scheduler has applied all three
    finally:
        broker.close()
    record = client.get_run(run.id)
    assert (record["status"], record["worker_id"], record["attempt"]) == ("Queued", None, 1)

    workers.start(cluster, name=unique("rescuer"))
    record = wait_terminal(stack, run.id)
    assert (record["status"], record["attempt"]) == ("Completed", 2)


@pytest.fixture
def host_b() -> Iterator[Link]:
    with network_host() as link:
        yield link


def test_a_worker_cut_off_from_the_network_is_found_lost_and_its_run_requeued(
    host_b: Link, tmp_path: Path
) -> None:
    redis_b = RedisServer(free_port(), tmp_path / "redis", bind=f"127.0.0.1 {host_b.address_a}")
    redis_b.start()
    stack = Stack(root=tmp_path / "stack", redis=redis_b, host="0.0.0.0", extra_env=SHIPPED)
    try:
        stack.start()
        cluster = unique("cut")
        client = stack.client()
        client.create_cluster(cluster, nodes=1, requeue_on_node_loss=True, max_attempts=2)
        remote = unique("host-b")
        stack.start_worker(
            cluster,
            name=remote,
            prefix=["ip", "netns", "exec", host_b.namespace],
            env={
                "RUNYARD_REDIS_URL": redis_b.url_at(host_b.address_a),
                "RUNYARD_API_URL": f"http://{host_b.address_a}:{stack.port}",
            },
        )
        marker = tmp_path / "attempted"
        folder = write(tmp_path / "src", {"retry.py": RETRY})
        run = submit(stack.url, folder, "retry.py", cluster, str(marker))
        wait_until(marker.exists, GUARD, what="the first attempt, on host B")
        assert wait_for_status(stack, run.id, {"Running"}, timeout=GUARD)["worker_id"] == remote

        host_b.cut()
        wait_until(
            lambda: client.get_run(run.id)["not_responding_at"], GUARD, 0.05, what="NotResponding"
        )
        rescuer = unique("host-a")
        stack.start_worker(cluster, name=rescuer)

        record = wait_terminal(stack, run.id)
        assert (record["status"], record["attempt"]) == ("Completed", 2)
        assert record["worker_id"] == rescuer
        assert record["not_responding_at"] is not None
    finally:
        stack.stop()
        redis_b.stop()


def test_a_worker_whose_runs_saturate_every_cpu_is_never_taken_for_lost(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("busy")
    client = stack.client()
    client.create_cluster(cluster, nodes=2)
    workers.start(cluster, slots=2)
    # Busy for three silences' worth: long enough to be declared lost were beats starved.
    seconds = 3 * (DEFAULTS.not_responding_after + DEFAULTS.sweep_interval)
    folder = write(tmp_path / "src", {"spin.py": SPINNER})
    runs = [submit(stack.url, folder, "spin.py", cluster, str(seconds)) for _ in range(2)]

    records = [wait_terminal(stack, run.id) for run in runs]

    for run, record in zip(runs, records, strict=True):
        assert record["status"] == "Completed", record.get("failure_reason")
        assert record["not_responding_at"] is None  # never NotResponding, not even briefly
        log = client.logs(run.id)
        assert f"spinning {2 * (os.cpu_count() or 1)} processes" in log
        assert "done [0, " in log
