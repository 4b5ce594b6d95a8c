"""Two schedulers, one leading: killing or pausing the leader hands admission over to the
other with no run dispatched twice and none lost. Real Redis, API, two real scheduler
processes and Celery worker processes running a trivial script with the local executor,
on SQLite and on PostgreSQL.

Each run's script appends its run id to one file, so that file says how many times each
run was executed; each run's ``attempt`` says how many times it was handed to a worker.
The handover is observed where an operator sees it (/readyz names the leader and its
fencing token), and the database's fence row is read back at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from runyard.status import TERMINAL
from scheduler.service import STEPPED_DOWN
from store import fence
from store.db import make_engine
from tests.support.runs import submit, write
from tests.support.services import (
    ADMIN,
    Stack,
    process_alive,
    redis_server,
    runyard,
    unique,
    wait_until,
)

# Appends the run's id to the file named by its argument (one short O_APPEND write).
MARK = """
import os, sys
with open(sys.argv[1], "a") as marks:
    marks.write(os.environ["RUNYARD_RUN_ID"] + "\\n")
"""

RUNS = 40
SLOTS = 3  # per worker; two workers


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    """API and a first scheduler (``start``) on a Redis of the test's own, on SQLite and on
    PostgreSQL; the test starts the second scheduler and the workers."""
    with redis_server(tmp_path / "redis") as server:
        live = Stack(
            root=tmp_path / "stack",
            redis=server,
            database_url=database_url,
            extra_env={"RUNYARD_SUBMIT_RATE_LIMIT": "100000/minute"},
        )
        try:
            live.start()
            yield live
        finally:
            for process in live.processes:  # a paused one cannot stop: let it go on first
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGCONT)
            live.stop()


def leader(stack: Stack) -> dict[str, Any] | None:
    answer = httpx.get(f"{stack.url}/readyz", headers=ADMIN, timeout=10).json()
    return answer.get("leader")


Process = subprocess.Popen  # type: ignore[type-arg]


def schedulers(stack: Stack) -> dict[int, tuple[Process, Path]]:
    """Both scheduler processes and their logs by pid, once one of them leads."""
    second = stack._spawn(runyard("scheduler"), "scheduler-2.log")
    wait_until(lambda: leader(stack), 30, 0.1, what="a scheduler to take the lease")
    first = next(p for p in stack.processes if p.args == second.args and p is not second)
    return {
        first.pid: (first, stack.root / "scheduler.log"),
        second.pid: (second, stack.root / "scheduler-2.log"),
    }


def fence_token(database_url: str) -> int | None:
    """The highest leader token that has written to the database."""
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return fence.current(session)
    finally:
        engine.dispose()


def pid_of(lead: dict[str, Any]) -> int:
    return int(str(lead["scheduler"]).rsplit("-", 1)[1])


def submit_runs(stack: Stack, tmp_path: Path, cluster: str, marks: Path) -> list[str]:
    """One run through the SDK (snapshot and environment), then the rest with the same
    spec straight to the API, as ``runyard submit`` sends it."""
    folder = write(tmp_path / "src", {"mark.py": MARK})
    first = submit(stack.url, folder, "mark.py", cluster, str(marks), experiment="failover")
    details = first.get_details()
    spec = {
        "experiment": "failover",
        "cluster": cluster,
        "script": "mark.py",
        "arguments": [str(marks)],
        "environment": details["runDefinition"]["environment"],
        "snapshot_digest": details["properties"]["snapshotId"],
    }
    client = stack.client()
    return [first.id] + [client.submit(spec)["id"] for _ in range(RUNS - 1)]


def completed(stack: Stack, cluster: str) -> int:
    return stack.client().count_runs(cluster=cluster, status="Completed")


def all_ended(stack: Stack, ids: list[str]) -> bool:
    client = stack.client()
    return all(client.get_run(run_id)["status"] in TERMINAL for run_id in ids)


def check_each_ran_once(stack: Stack, ids: list[str], marks: Path) -> None:
    client = stack.client()
    runs = [client.get_run(run_id) for run_id in ids]
    assert [r["status"] for r in runs] == ["Completed"] * len(ids)
    assert [r["attempt"] for r in runs] == [1] * len(ids)  # handed to a worker once each
    executed = marks.read_text().split()
    assert sorted(executed) == sorted(ids)  # each executed exactly once, none lost


def start_workers(stack: Stack, cluster: str) -> None:
    stack.client().create_cluster(cluster, nodes=2 * SLOTS)
    for _ in range(2):
        stack.start_worker(cluster, slots=SLOTS)


def test_killing_the_leader_hands_admission_over_with_every_run_run_once(
    stack: Stack, tmp_path: Path, database_url: str
) -> None:
    cluster = unique("failover")
    marks = tmp_path / "marks.txt"
    start_workers(stack, cluster)
    processes = schedulers(stack)
    ids = submit_runs(stack, tmp_path, cluster, marks)
    wait_until(lambda: completed(stack, cluster) >= 5, 120, 0.1, what="runs to complete")

    first = leader(stack)
    assert first is not None
    killed, _ = processes[pid_of(first)]
    killed.send_signal(signal.SIGKILL)
    killed.wait()

    second = wait_until(
        lambda: (lead := leader(stack)) and lead["token"] != first["token"] and lead,
        30,
        0.1,
        what="the other scheduler to take the lease",
    )
    assert isinstance(second, dict)
    assert pid_of(second) != pid_of(first) and process_alive(pid_of(second))
    assert second["token"] > first["token"]

    wait_until(lambda: all_ended(stack, ids), 240, 0.2, what="every run to end")
    check_each_ran_once(stack, ids, marks)
    assert fence_token(database_url) == second["token"]


def test_a_paused_leader_loses_the_lease_and_never_dispatches_when_it_wakes(
    stack: Stack, tmp_path: Path, database_url: str
) -> None:
    cluster = unique("paused")
    marks = tmp_path / "marks.txt"
    start_workers(stack, cluster)
    processes = schedulers(stack)
    ids = submit_runs(stack, tmp_path, cluster, marks)
    wait_until(lambda: completed(stack, cluster) >= 5, 120, 0.1, what="runs to complete")

    first = leader(stack)
    assert first is not None
    paused, paused_log = processes[pid_of(first)]
    paused.send_signal(signal.SIGSTOP)
    try:
        second = wait_until(
            lambda: (lead := leader(stack)) and lead["token"] != first["token"] and lead,
            30,
            0.1,
            what="the other scheduler to take the lease",
        )
    finally:
        paused.send_signal(signal.SIGCONT)
    assert isinstance(second, dict) and second["token"] > first["token"]

    # The old leader wakes holding a lapsed lease: it follows, the new one keeps leading.
    wait_until(
        lambda: STEPPED_DOWN in paused_log.read_text(),
        30,
        0.1,
        what="the old leader to step down",
    )
    wait_until(lambda: all_ended(stack, ids), 240, 0.2, what="every run to end")
    check_each_ran_once(stack, ids, marks)
    assert leader(stack) == {"scheduler": second["scheduler"], "token": second["token"]}
    assert paused.poll() is None  # it runs on, as a follower
    # No transaction of the old leader's committed after the new one's.
    assert fence_token(database_url) == second["token"]
