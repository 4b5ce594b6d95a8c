"""Stopping and supervision: `runyard up` and workers stop in bounded time, nothing they
started outlives them, runs they stop are recorded, and `up` restarts a child that dies.

Real processes throughout: `runyard up` with its own Redis, API, scheduler and workers, and
standalone workers against the module's stack. The one time bound is the one promised: the
largest cluster cancel grace period + 10 s (a second signal skips the grace period).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from runyard.client import Client
from runyard.config import stored_token
from tests.support.runs import submit, write
from tests.support.services import (
    Stack,
    free_port,
    port_open,
    process_alive,
    runyard,
    unique,
    wait_until,
)

STOP_MARGIN = 10.0  # the bound: grace + this

# Ignores SIGTERM (says so, once) and would train forever: only SIGKILL ends it.
STUBBORN = """
import os, signal, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
def on_term(*_):
    print("got SIGTERM, ignoring it", flush=True)
signal.signal(signal.SIGTERM, on_term)
print("training", flush=True)
while True:
    time.sleep(0.1)
"""


# --- helpers --------------------------------------------------------------------------------


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid``, with its command line."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                with contextlib.suppress(OSError):
                    found[child] = (
                        Path(f"/proc/{child}/cmdline")
                        .read_bytes()
                        .replace(b"\0", b" ")
                        .decode(errors="replace")
                    )
                    frontier.append(child)
    return found


def _recorded(data_dir: Path, run_id: str) -> tuple[str, str | None, str]:
    """A run's status, reason and log as the database holds them (read directly: `up` is
    no longer running)."""
    with contextlib.closing(sqlite3.connect(data_dir / "runyard.db")) as db:
        status, reason = db.execute(
            "SELECT status, failure_reason FROM run WHERE id = ?", (run_id,)
        ).fetchone()
        chunks = db.execute("SELECT text FROM runlog WHERE run_id = ? ORDER BY seq", (run_id,))
        return status, reason, "".join(text for (text,) in chunks)


@dataclass
class Up:
    """A `runyard up` started by a test, in its own session (killed whole at the end)."""

    process: subprocess.Popen  # type: ignore[type-arg]
    port: int
    data_dir: Path
    log: Path
    env: dict[str, str]
    seen: dict[int, str] = field(default_factory=dict)  # every process seen below it

    def processes(self) -> dict[int, str]:
        """The processes below `up` now (and remembered, to be killed after the test)."""
        found = _descendants(self.process.pid)
        self.seen.update(found)
        return found

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self) -> Client:
        return Client(self.url, self.env["RUNYARD_TOKEN"])

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            runyard(*args), env=self.env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def cluster_with_a_worker(self, name: str, grace: float) -> None:
        self.cli("cluster", "create", name, "--nodes", "1", "--grace", f"{grace:g}")
        client = self.client()
        wait_until(
            lambda: any(name in w["clusters"] for w in client.list_workers()),
            60,
            0.2,
            what=f"up's worker for {name}",
        )

    def submit(self, folder: Path, script: str, cluster: str, *args: str) -> str:
        out = self.cli("submit", str(folder), "-s", script, "-c", cluster, "--json", "--", *args)
        return json.loads(out)["id"]

    def wait_running(self, run_id: str, pid_file: Path) -> int:
        client = self.client()
        wait_until(lambda: client.get_run(run_id)["status"] == "Running", 60, 0.1, what="the run")
        wait_until(pid_file.exists, 30, 0.05, what="the run's pid")
        wait_until(lambda: pid_file.read_text().strip(), 5, 0.05, what="the run's pid")
        return int(pid_file.read_text())


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(RUNYARD_HEARTBEAT_INTERVAL="0.5")
    log = tmp_path / "up.log"
    data_dir = tmp_path / "data"
    with open(log, "w") as out:
        process = subprocess.Popen(
            runyard("up", "--port", str(port), "--data-dir", str(data_dir)),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Up(process, port, data_dir, log, env)
    try:
        wait_until(
            lambda: "Runyard API listening" in started.output() or process.poll() is not None,
            90,
            0.2,
            what="runyard up",
        )
        assert process.poll() is None, started.output()
        token = stored_token(started.url)  # runyard up keeps it in the credentials file
        env.update(RUNYARD_URL=started.url, RUNYARD_TOKEN=token)
        yield started
    finally:
        started.processes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid in started.seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()


def _stop(process: subprocess.Popen, sig: int, within: float) -> float:  # type: ignore[type-arg]
    """Send ``sig``; the seconds the process took to exit (fails past ``within``)."""
    started = time.monotonic()
    process.send_signal(sig)
    try:
        process.wait(within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {within:g} s after {signal.Signals(sig).name}")
    return time.monotonic() - started


# --- runyard up -----------------------------------------------------------------------------


def test_sigterm_stops_up_within_the_grace_period_and_records_the_run(
    up: Up, tmp_path: Path
) -> None:
    grace = 3.0
    up.cluster_with_a_worker("hold", grace)
    pid_file = tmp_path / "run.pid"
    src = write(tmp_path / "src", {"stubborn.py": STUBBORN})
    run_id = up.submit(src, "stubborn.py", "hold", str(pid_file))
    run_pid = up.wait_running(run_id, pid_file)
    started = up.processes()
    commands = " ".join(started.values())
    assert run_pid in started
    assert all(k in commands for k in ("redis-server", "runyard api", "runyard scheduler",
                                       "runyard worker"))  # fmt: skip

    elapsed = _stop(up.process, signal.SIGTERM, within=grace + STOP_MARGIN)
    print(f"runyard up stopped in {elapsed:.1f} s (grace {grace:g} s)")

    assert up.process.returncode == 0, up.output()
    assert {pid: c for pid, c in started.items() if process_alive(pid)} == {}
    assert not port_open(up.port)
    # The scheduler wrote the run's end before it stopped: no restart needed to see it.
    status, reason, log = _recorded(up.data_dir, run_id)
    assert (status, reason) == ("Failed", "service stopped")
    assert "got SIGTERM, ignoring it" in log  # it had its grace period


def test_a_second_sigterm_stops_up_at_once(up: Up, tmp_path: Path) -> None:
    grace = 300.0  # the first signal alone would wait this long for the run
    up.cluster_with_a_worker("patient", grace)
    pid_file = tmp_path / "run.pid"
    src = write(tmp_path / "src", {"stubborn.py": STUBBORN})
    run_id = up.submit(src, "stubborn.py", "patient", str(pid_file))
    run_pid = up.wait_running(run_id, pid_file)
    started = up.processes()

    up.process.send_signal(signal.SIGTERM)
    # The worker has its SIGTERM (Celery says so) and is waiting out the run's grace period.
    wait_until(lambda: "Warm shutdown" in up.output(), 10, 0.05, what="the worker to be told")
    # At once: the bound with no grace period in it.
    elapsed = _stop(up.process, signal.SIGTERM, within=STOP_MARGIN)
    print(f"runyard up stopped {elapsed:.1f} s after the second SIGTERM (grace {grace:g} s)")

    assert not process_alive(run_pid)
    assert {pid: c for pid, c in started.items() if process_alive(pid)} == {}
    assert not port_open(up.port)
    assert _recorded(up.data_dir, run_id)[:2] == ("Failed", "service stopped")


def test_children_die_with_a_killed_up(up: Up, tmp_path: Path) -> None:
    up.cluster_with_a_worker("orphans", 3)
    pid_file = tmp_path / "run.pid"
    src = write(tmp_path / "src", {"stubborn.py": STUBBORN})
    run_pid = up.wait_running(up.submit(src, "stubborn.py", "orphans", str(pid_file)), pid_file)
    started = up.processes()
    assert run_pid in started and len(started) >= 5  # redis, api, scheduler, worker, run

    up.process.kill()
    up.process.wait()
    wait_until(
        lambda: not any(process_alive(pid) for pid in started), 10, 0.1, what="up's children to die"
    )
    wait_until(lambda: not port_open(up.port), 10, 0.1, what="the port to be free")


def test_up_restarts_a_child_that_dies(up: Up, tmp_path: Path) -> None:
    def api_pids() -> list[int]:
        children = up.processes()
        return [pid for pid, c in children.items() if " api " in f" {c} " and process_alive(pid)]

    (first,) = api_pids()
    os.kill(first, signal.SIGKILL)

    def healthy_again() -> bool:
        try:
            return httpx.get(f"{up.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(lambda: api_pids() and api_pids() != [first], 30, 0.1, what="a new API")
    wait_until(healthy_again, 60, 0.2, what="/healthz to answer again")
    assert up.process.poll() is None, up.output()
    assert "api exited with code -9; restarting it" in up.output()

    # The service still works end to end.
    up.cluster_with_a_worker("after", 3)
    src = write(tmp_path / "src", {"hi.py": "print('served after the restart')\n"})
    run_id = up.submit(src, "hi.py", "after")
    assert "served after the restart" in up.cli("logs", run_id, "--follow")
    assert up.client().get_run(run_id, fresh=True)["status"] == "Completed"


# --- a standalone worker --------------------------------------------------------------------


def test_a_stopped_worker_ends_its_run_within_the_grace_period(
    stack: Stack, workers, tmp_path: Path
) -> None:
    grace = 2.0
    cluster = unique("halt")
    client = stack.client()
    client.create_cluster(cluster, nodes=1, cancel_grace_seconds=grace)
    worker = workers.start(cluster)
    pid_file = tmp_path / "run.pid"
    src = write(tmp_path / "src", {"stubborn.py": STUBBORN})
    run = submit(stack.url, src, "stubborn.py", cluster, str(pid_file))
    wait_until(lambda: client.get_run(run.id)["status"] == "Running", 30, 0.1, what="the run")
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 10, 0.05, what="its pid")
    run_pid = int(pid_file.read_text())

    elapsed = _stop(worker, signal.SIGTERM, within=grace + STOP_MARGIN)
    print(f"worker stopped in {elapsed:.1f} s (grace {grace:g} s)")

    assert worker.returncode == 0
    assert not process_alive(run_pid)
    record = client.get_run(run.id, fresh=True)  # everything the worker reported is in
    assert (record["status"], record["failure_reason"]) == ("Failed", "service stopped")
    assert "got SIGTERM, ignoring it" in client.logs(run.id)  # it had its grace period


def test_a_stopped_worker_leaves_its_run_to_be_requeued_where_the_cluster_asks(
    stack: Stack, workers, tmp_path: Path
) -> None:
    grace = 2.0
    cluster = unique("again")
    client = stack.client()
    client.create_cluster(
        cluster, nodes=1, cancel_grace_seconds=grace, requeue_on_node_loss=True, max_attempts=2
    )
    worker = workers.start(cluster, name=unique("leaving"))
    marker = tmp_path / "first.pid"
    script = (
        "import os, signal, sys, time\n"
        "marker = sys.argv[1]\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').write(str(os.getpid()))\n"
        "    signal.signal(signal.SIGTERM, lambda *_: None)\n"
        "    print('first attempt', flush=True)\n"
        "    while True: time.sleep(0.1)\n"
        "print('second attempt finishes', flush=True)\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"again.py": script}), "again.py", cluster,
                 str(marker))  # fmt: skip
    wait_until(lambda: marker.exists() and marker.read_text(), 30, 0.1, what="attempt 1")
    first_pid = int(marker.read_text())

    _stop(worker, signal.SIGTERM, within=grace + STOP_MARGIN)
    assert not process_alive(first_pid)
    assert client.get_run(run.id, fresh=True)["status"] != "Failed"

    workers.start(cluster, name=unique("next"))
    record = wait_until(
        lambda: (r := client.get_run(run.id))["status"] in ("Completed", "Failed") and r,
        40,
        0.1,
        what="the requeued run to end",
    )
    assert record["status"] == "Completed", record["failure_reason"]  # type: ignore[index]
    assert record["attempt"] == 2  # type: ignore[index]
