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

import ast
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session

from protocol import keys
from protocol.messages import LogChunk, StateChanged
from protocol.replies import as_text
from protocol.streams import send_to_ingest, shard_of
from runyard.status import TERMINAL, RunStatus
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

# The same, after printing five lines and logging five points through the SDK.
REPORT = """
import os, sys
from runyard.core import Run
run = Run.get_context()
for step in range(5):
    print(f"line {step}", flush=True)
    run.log("step", step)
with open(sys.argv[1], "a") as marks:
    marks.write(os.environ["RUNYARD_RUN_ID"] + "\\n")
"""

RUNS = 40
SLOTS = 3  # per worker; two workers
SHARDS = 8  # the default ingest_shards


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


def submit_runs(
    stack: Stack, tmp_path: Path, cluster: str, marks: Path, script: str = MARK, runs: int = RUNS
) -> list[str]:
    """One run through the SDK (snapshot and environment), then the rest with the same
    spec straight to the API, as ``runyard submit`` sends it."""
    folder = write(tmp_path / "src", {"mark.py": script})
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
    return [first.id] + [client.submit(spec)["id"] for _ in range(runs - 1)]


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


Signal = signal.Signals


@contextmanager
def signalled(process: Process, how: Signal) -> Iterator[None]:
    """SIGKILL a scheduler (reaped on leaving) or SIGSTOP it (woken with SIGCONT on
    leaving, whatever happened inside)."""
    process.send_signal(how)
    try:
        yield
    finally:
        if how == signal.SIGSTOP:
            process.send_signal(signal.SIGCONT)
        else:
            process.wait()


def next_leader(stack: Stack, first: dict[str, Any]) -> dict[str, Any]:
    """The scheduler that leads after ``first``, once it does."""
    second = wait_until(
        lambda: (lead := leader(stack)) and lead["token"] != first["token"] and lead,
        30,
        0.1,
        what="the other scheduler to take the lease",
    )
    assert isinstance(second, dict) and second["token"] > first["token"]
    assert pid_of(second) != pid_of(first) and process_alive(pid_of(second))
    return second


def take_over(
    stack: Stack, processes: dict[int, tuple[Process, Path]], how: Signal
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Kill or pause the leader and wait for the other to lead (a paused one is woken once
    it does); the old lead, the new one, and the old leader's log."""
    first = leader(stack)
    assert first is not None
    process, log = processes[pid_of(first)]
    with signalled(process, how):
        second = next_leader(stack, first)
    return first, second, log


def test_killing_the_leader_hands_admission_over_with_every_run_run_once(
    stack: Stack, tmp_path: Path, database_url: str
) -> None:
    cluster = unique("failover")
    marks = tmp_path / "marks.txt"
    start_workers(stack, cluster)
    processes = schedulers(stack)
    ids = submit_runs(stack, tmp_path, cluster, marks)
    wait_until(lambda: completed(stack, cluster) >= 5, 120, 0.1, what="runs to complete")

    _, second, _ = take_over(stack, processes, signal.SIGKILL)

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

    first, second, paused_log = take_over(stack, processes, signal.SIGSTOP)
    paused, _ = processes[pid_of(first)]

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


# Ingest shards: each scheduler consumes its share, one holder per shard at a time.


@pytest.fixture
def broker(stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis.url)
    try:
        yield client
    finally:
        client.close()


def shard_owners(broker: redis.Redis) -> dict[int, int | None]:
    """Which scheduler process (pid) holds each shard's lease."""
    values = broker.mget([keys.ingest_shard_lease(s) for s in range(SHARDS)])
    return {
        shard: None if value is None else int(as_text(value).rsplit("-", 1)[1])
        for shard, value in enumerate(values)
    }


def balanced(broker: redis.Redis, pids: set[int]) -> bool:
    owners = list(shard_owners(broker).values())
    return all(owners.count(pid) == SHARDS // len(pids) for pid in pids)


def test_both_schedulers_apply_the_runs_on_their_own_shards(
    stack: Stack, tmp_path: Path, broker: redis.Redis
) -> None:
    cluster = unique("shared")
    marks = tmp_path / "marks.txt"
    start_workers(stack, cluster)
    processes = schedulers(stack)
    wait_until(lambda: balanced(broker, set(processes)), 30, 0.1, what="the shards to be shared")
    ids = submit_runs(stack, tmp_path, cluster, marks, script=REPORT, runs=16)
    wait_until(lambda: all_ended(stack, ids), 240, 0.2, what="every run to end")
    check_each_ran_once(stack, ids, marks)

    client = stack.client()
    for run_id in ids:
        lines = [line for line in client.logs(run_id).splitlines() if line.startswith("line ")]
        assert lines == [f"line {n}" for n in range(5)]
        points = client.get_metrics(run_id, name="step")["runs"][run_id]["step"]["points"]
        assert [point[-1] for point in points] == [0, 1, 2, 3, 4]

    # Each run's entries were on a shard consumed by its holder alone; the runs' shards
    # are held by both processes, so each applied some of them.
    owners = shard_owners(broker)
    assert {owners[shard_of(run_id, SHARDS)] for run_id in ids} == set(processes)
    for shard in {shard_of(run_id, SHARDS) for run_id in ids}:
        stream = keys.ingest_shard(shard)
        consumers = broker.xinfo_consumers(stream, keys.INGEST_GROUP)
        assert [int(as_text(c["name"]).rsplit("-", 1)[1]) for c in consumers] == [owners[shard]]
        assert broker.xpending(stream, keys.INGEST_GROUP)["pending"] == 0

    # What an operator sees: the lag per shard, and summed.
    client.get_run(ids[0], fresh=True)  # every shard has passed a barrier behind them all
    text = httpx.get(f"{stack.url}/metrics", headers=ADMIN, timeout=10).text
    lag = {
        sample.labels.get("stream", ""): sample.value
        for family in text_string_to_metric_families(text)
        if family.name in ("runyard_ingest_lag", "runyard_ingest_stream_lag")
        for sample in family.samples
    }
    assert [lag[keys.ingest_shard(shard)] for shard in range(SHARDS)] == [0] * SHARDS
    assert lag[""] == sum(lag[stream] for stream in lag if stream)


def leave_pending_with_holder(
    stack: Stack, broker: redis.Redis, processes: dict[int, tuple[Process, Path]]
) -> tuple[str, str, Process, Path]:
    """A running run whose shard's holder is stopped (SIGSTOP) holding, read but not
    acknowledged, two log chunks and the run's Completed; behind them on the shard, unread,
    a third chunk and a Failed report, which must come second (applied before Completed,
    Failed would win). The run's id and shard stream, and the holder and its log."""
    wait_until(lambda: balanced(broker, set(processes)), 30, 0.1, what="the shards to be shared")
    run_id = stack.client().start_interactive(unique("shards"))["id"]
    stream = keys.ingest_shard(shard_of(run_id, SHARDS))
    holder, log = processes[shard_owners(broker)[shard_of(run_id, SHARDS)]]
    holder.send_signal(signal.SIGSTOP)
    lease = broker.get(keys.ingest_shard_lease(shard_of(run_id, SHARDS)))
    name = as_text(lease).split(" ", 1)[1]  # "<token> <scheduler name>"
    send_to_ingest(
        broker,
        [
            LogChunk(run_id=run_id, seq=0, text="0\n"),
            LogChunk(run_id=run_id, seq=1, text="1\n"),
            StateChanged(run_id=run_id, status=RunStatus.COMPLETED),
        ],
    )
    # Read as the holder (if it was blocked reading, Redis has handed them to it already).
    broker.xreadgroup(keys.INGEST_GROUP, name, {stream: ">"})
    assert broker.xpending(stream, keys.INGEST_GROUP)["consumers"] == [
        {"name": name.encode(), "pending": 3}
    ]
    send_to_ingest(
        broker,
        [
            LogChunk(run_id=run_id, seq=2, text="2\n"),
            StateChanged(run_id=run_id, status=RunStatus.FAILED, reason="must come second"),
        ],
    )
    return run_id, stream, holder, log


def survivor_holds_every_shard(broker: redis.Redis, survivor: int) -> None:
    wait_until(
        lambda: set(shard_owners(broker).values()) == {survivor},
        30,
        0.1,
        what="the other scheduler to take every shard",
    )


def check_applied_in_order(stack: Stack, run_id: str) -> None:
    run = stack.client().get_run(run_id, fresh=True)  # once every shard has passed its copy
    assert run["status"] == "Completed"
    assert stack.client().logs(run_id) == "0\n1\n2\n"


@dataclass
class Held:
    """A run whose entries were left pending with its shard's holder, which was then
    killed or paused; the other scheduler has taken every shard and applied them."""

    run_id: str
    stream: str
    holder: Process
    log: Path
    processes: dict[int, tuple[Process, Path]]
    logged_before: int  # bytes of the holder's log before it was signalled


@contextmanager
def shard_holder_signalled(stack: Stack, broker: redis.Redis, how: Signal) -> Iterator[Held]:
    """Two schedulers; entries left pending with one's shard (``leave_pending_with_holder``);
    that one SIGKILLed or kept SIGSTOPped (woken on leaving); the other takes every shard
    within the lease and has applied the run's entries in order when this yields."""
    processes = schedulers(stack)
    run_id, stream, holder, log = leave_pending_with_holder(stack, broker, processes)
    (survivor,) = set(processes) - {holder.pid}
    logged_before = len(log.read_bytes())
    with signalled(holder, how):  # for SIGSTOP: it is stopped already; this wakes it after
        survivor_holds_every_shard(broker, survivor)
        check_applied_in_order(stack, run_id)
        yield Held(run_id, stream, holder, log, processes, logged_before)


def test_killing_a_shard_holder_its_pending_entries_are_applied_first_by_the_other(
    stack: Stack, broker: redis.Redis
) -> None:
    with shard_holder_signalled(stack, broker, signal.SIGKILL) as held:
        assert broker.xpending(held.stream, keys.INGEST_GROUP)["pending"] == 0


def test_a_paused_shard_holder_replays_harmlessly_and_stops_reading_the_shards_it_lost(
    stack: Stack, broker: redis.Redis
) -> None:
    with shard_holder_signalled(stack, broker, signal.SIGSTOP) as held:
        pass
    run_id, log, before, processes = held.run_id, held.log, held.logged_before, held.processes

    def let_go() -> list[int] | None:
        woken = log.read_bytes()[before:].decode()
        lines = [line for line in woken.splitlines() if "lets go of ingest shards" in line]
        return ast.literal_eval(lines[0].rsplit("shards", 1)[1].strip()) if lines else None

    lost = wait_until(let_go, 30, 0.1, what="the woken scheduler to let go of its shards")
    assert isinstance(lost, list) and shard_of(run_id, SHARDS) in lost
    check_applied_in_order(stack, run_id)  # whatever it did on waking changed nothing
    assert held.holder.poll() is None  # it runs on, with its share of the shards again
    wait_until(lambda: balanced(broker, set(processes)), 30, 0.1, what="the shards to be shared")
    send_to_ingest(broker, [LogChunk(run_id=run_id, seq=3, text="3\n")])
    stack.client().get_run(run_id, fresh=True)
    assert stack.client().logs(run_id) == "0\n1\n2\n3\n"
