"""Admission at cluster scale, and scheduler failover (issue 16, items 3 and 4).

    python -m bench.admission [--queued 10000] [--slots 100] [--runs 1000] [--postgres]
                              [--skip-e2e] [--skip-failover]

1. Scheduler only: a queue of ``--queued`` runs on one cluster (written through the store
   layer, SQLite; PostgreSQL too with ``--postgres``), ``--slots`` worker slots (simulated
   worker heartbeats in a private Redis), the real admission unit of work
   (``scheduler.service.dispatch_cluster``, fenced, each task sent to the real broker).
   Each round admits into every free slot; the runs admitted are then marked Completed
   directly (not timed) so the next round finds the slots free again, until the queue is
   empty. Decisions/s = runs admitted / time inside dispatch_cluster. The same is measured
   with the admission before issue 16 (``git show 4a3ee33:scheduler/admission.py``: a
   cluster read, an experiment read and an update per run) as the anchor.
2. End to end: the API, one scheduler and real Celery worker processes (local executor,
   SQLite) with ``--slots`` slots in all; ``--runs`` runs of a one-line script
   (``pass``, run by this very Python) submitted over REST; seconds from the first submit
   to the last Completed, and each run's queued -> completed p50/p95.
3. Failover: two scheduler processes; the leader is SIGKILLed and the time until the other
   holds the lease (read from Redis every 10 ms) is measured, three times.

Not a test: it asserts nothing about speed. ``figures()`` returns the rows ``python -m
bench`` prints.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, inspect, text
from sqlmodel import Session, col, update

from bench.figures import quantile
from protocol import keys
from protocol.celery_app import make_celery
from protocol.leader import current_leader
from protocol.workers import WorkerInfo, live_workers, publish_heartbeat
from runyard.status import RunStatus
from scheduler import admission, service
from scheduler.leadership import Lease
from scheduler.service import dispatch_cluster
from store import clusters, runs
from store.db import make_engine, migrate
from store.models import Cluster, ClusterCreate, Run, RunSpec
from tests.support.services import (
    Stack,
    postgres_server,
    redis_server,
    runyard,
    wait_until,
)

CLUSTER = "scale"
DIGEST = "sha256:" + "0" * 64
PREVIOUS = "4a3ee33"  # main before issue 16
QUEUE_INDEX = "ix_run_queue_order_sched_bench"


@dataclass
class AdmissionFigure:
    decisions: int
    seconds: float
    first_round_ms: float  # one round (every free slot filled) with the whole queue waiting
    last_round_ms: float  # the last full round, with about one round's worth waiting
    rounds: int
    sending_seconds: float = float("nan")  # of ``seconds``: sending tasks to the broker

    @property
    def per_second(self) -> float:
        return self.decisions / self.seconds if self.seconds else float("nan")


def progress(message: str) -> None:
    print(f"[bench.admission] {message}", file=sys.stderr, flush=True)


# --- 1. scheduler only ------------------------------------------------------------------------


def ensure_queue_index(engine: Engine) -> str:
    """The queue-order index admission reads through (migration 0012 adds it on main); made
    here when no index on ``run`` starts with those columns."""
    wanted = ["cluster", "status", "dispatched_at", "priority", "created_at", "id"]
    for index in inspect(engine).get_indexes("run"):
        if [c for c in index["column_names"] if c][: len(wanted)] == wanted:
            return f"existing index {index['name']}"
    with engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE INDEX {QUEUE_INDEX} ON run "
                "(cluster, status, dispatched_at, priority DESC, created_at, id)"
            )
        )
    return f"bench-made index {QUEUE_INDEX}"


def fill_queue(engine: Engine, queued: int) -> None:
    with Session(engine) as session:
        if session.get(Cluster, CLUSTER) is None:
            clusters.create_cluster(session, ClusterCreate(name=CLUSTER, nodes=10_000))
            session.commit()
        for i in range(queued):
            spec = RunSpec(
                experiment=f"sweep-{i % 20}", cluster=CLUSTER, script="train.py", priority=i % 3
            )
            runs.submit(session, spec, DIGEST, submitted_by=None)
            if i % 1000 == 999:
                session.commit()
        session.commit()


def previous_admission() -> ModuleType | None:
    """The admission module as it was before issue 16, loaded from git (None if absent)."""
    found = subprocess.run(
        ["git", "show", f"{PREVIOUS}:scheduler/admission.py"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if found.returncode != 0:
        return None
    folder = Path(tempfile.mkdtemp(prefix="runyard-admission-previous-"))
    path = folder / "admission_previous.py"
    path.write_text(found.stdout)
    spec = importlib.util.spec_from_file_location("admission_previous", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dispatch_previous(module: ModuleType, session: Session, celery: Any, workers: list) -> list:
    assignments = module.admit(session, CLUSTER, workers)
    session.commit()
    for assignment in assignments:
        admission.send(celery, assignment)
    return [a.run_id for a in assignments]


def drain(
    engine: Engine, client: redis.Redis, redis_url: str, previous: ModuleType | None = None
) -> AdmissionFigure:
    """Admit the whole queue, round after round; time only the admission units of work."""
    celery = make_celery(redis_url)
    sending = [0.0]
    real_send_all = service.send_all

    def timed_send_all(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return real_send_all(*args)
        finally:
            sending[0] += time.perf_counter() - started

    service.send_all = timed_send_all  # type: ignore[assignment]
    lease = Lease(client, "bench", 600)
    assert lease.tick() and lease.token is not None
    decisions, seconds, rounds_ms = 0, 0.0, []
    try:
        with Session(engine) as session:
            while True:
                workers = live_workers(client)
                started = time.perf_counter()
                if previous is None:
                    sent = dispatch_cluster(session, celery, CLUSTER, workers, lease.token)
                else:
                    sent = dispatch_previous(previous, session, celery, workers)
                elapsed = time.perf_counter() - started
                if not sent:
                    break
                decisions += len(sent)
                seconds += elapsed
                rounds_ms.append(elapsed * 1000)
                # The workers finish them (not timed): their slots are free for the next round.
                session.execute(
                    update(Run)
                    .where(col(Run.id).in_(sent))
                    .values(status=RunStatus.COMPLETED)
                    .execution_options(synchronize_session=False)
                )
                session.commit()
                client.delete(keys.cluster_queue(CLUSTER))
    finally:
        service.send_all = real_send_all  # type: ignore[assignment]
        lease.step_down()
        celery.close()
    full = [ms for ms in rounds_ms[:-1]] or rounds_ms
    sent_in = sending[0] if previous is None else float("nan")
    return AdmissionFigure(decisions, seconds, rounds_ms[0], full[-1], len(rounds_ms), sent_in)


def heartbeats(client: redis.Redis, slots: int) -> None:
    """``slots`` worker slots in ten simulated workers (heartbeats that outlive the bench)."""
    workers = 10 if slots >= 10 else 1
    for i in range(workers):
        info = WorkerInfo(
            id=f"sim-{i}", hostname="bench", clusters=[CLUSTER], slots=slots // workers
        )
        publish_heartbeat(client, info, ttl=24 * 3600)


def scheduler_only(
    database: Callable[[str], str], queued: int, slots: int, redis_url: str, label: str
) -> dict[str, Any]:
    """Both admissions, each on a fresh database ``database(name)``."""
    out: dict[str, Any] = {"database": label}
    for which in ("current", "previous"):
        previous = previous_admission() if which == "previous" else None
        if which == "previous" and previous is None:
            continue
        engine = make_engine(database(which))
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        try:
            migrate(engine)
            out["index"] = ensure_queue_index(engine)
            progress(f"{label}: filling {queued} queued runs ({which} admission)")
            filled = time.perf_counter()
            fill_queue(engine, queued)
            out["fill_seconds"] = time.perf_counter() - filled
            heartbeats(client, slots)
            progress(f"{label}: draining with {slots} slots ({which} admission)")
            out[which] = drain(engine, client, redis_url, previous)
        finally:
            client.close()
            engine.dispose()
    return out


def fresh_database(server_url: str, name: str) -> str:
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE bench_{name}")
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + f"/bench_{name}"


# --- 2. end to end ----------------------------------------------------------------------------


def end_to_end(root: Path, redis_server_: Any, runs_: int, slots: int) -> dict[str, float]:
    workers = max(slots // 25, 1)
    stack = Stack(
        root=root / "stack",
        redis=redis_server_,
        extra_env={"RUNYARD_SUBMIT_RATE_LIMIT": "1000000/minute"},
    )
    folder = root / "src"
    folder.mkdir(exist_ok=True)
    (folder / "noop.py").write_text("pass\n")
    stack.start()
    try:
        client = stack.client()
        client.create_cluster("e2e", nodes=slots)
        for i in range(workers):
            stack.start_worker("e2e", slots=slots // workers, name=f"e2e-{i}")
        from bench.core import config
        from runyard.core import Experiment, Workspace

        experiment = Experiment(Workspace(url=stack.url), "e2e")
        first = experiment.submit(config(folder, "e2e"))
        first.wait_for_completion()
        details = first.get_details()
        spec = {
            "experiment": "e2e",
            "cluster": "e2e",
            "script": "noop.py",
            "environment": details["runDefinition"]["environment"],
            "snapshot_digest": details["properties"]["snapshotId"],
        }
        progress(f"end to end: {runs_} runs onto {workers} workers x {slots // workers} slots")
        started = time.monotonic()
        ids = [client.submit(spec)["id"] for _ in range(runs_)]
        submitted = time.monotonic() - started
        wait_until(
            lambda: client.count_runs(experiment="e2e", status="Completed") >= runs_ + 1,
            3600,
            0.25,
            what="every run to complete",
        )
        elapsed = time.monotonic() - started
        records = [client.get_run(run_id) for run_id in ids]
        failed = [r["id"] for r in records if r["status"] != "Completed"]
        latencies = [
            datetime.fromisoformat(r["completed_at"]).timestamp()
            - datetime.fromisoformat(r["queued_at"]).timestamp()
            for r in records
        ]
        return {
            "workers": workers,
            "slots": slots,
            "runs": runs_,
            "failed": len(failed),
            "submit_seconds": submitted,
            "seconds": elapsed,
            "runs_per_second": runs_ / elapsed,
            "p50": quantile(latencies, 0.5),
            "p95": quantile(latencies, 0.95),
        }
    finally:
        stack.stop()


# --- 3. failover ------------------------------------------------------------------------------


def failover(root: Path, redis_server_: Any, times: int = 3) -> list[float]:
    """Seconds from SIGKILL of the leader to the other scheduler holding the lease."""
    stack = Stack(root=root / "failover", redis=redis_server_)
    stack.start()
    client = redis.Redis.from_url(redis_server_.url)
    handovers = []
    try:
        stack._spawn(runyard("scheduler"), "scheduler-2.log")
        for _ in range(times):
            lead = wait_until(lambda: current_leader(client), 30, 0.01, what="a leader")
            pid = int(lead.name.rsplit("-", 1)[1])  # type: ignore[attr-defined]
            killed = next(p for p in stack.processes if p.pid == pid)
            os.kill(pid, signal.SIGKILL)
            started = time.monotonic()
            killed.wait()
            old_token = lead.token  # type: ignore[attr-defined]
            wait_until(
                lambda: (now := current_leader(client)) and now.token != old_token,  # noqa: B023
                60,
                0.01,
                what="the other scheduler to lead",
            )
            handovers.append(time.monotonic() - started)
            stack._spawn(runyard("scheduler"), "scheduler-3.log")  # back to two
    finally:
        client.close()
        stack.stop()
    return handovers


# --- figures ----------------------------------------------------------------------------------


def run_all(
    queued: int,
    slots: int,
    runs_: int,
    postgres: bool,
    e2e: bool,
    failover_: bool,
) -> dict[str, Any]:
    results: dict[str, Any] = {"queued": queued, "slots": slots, "load": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="runyard-bench-admission-") as tmp:
        root = Path(tmp)
        with redis_server(root / "redis") as server:
            results["sqlite"] = scheduler_only(
                lambda name: f"sqlite:///{root / name}.db", queued, slots, server.url, "SQLite"
            )
            if postgres:
                folder = Path(tempfile.mkdtemp(prefix="runyard-bench-pg-"))
                folder.chmod(0o755)
                try:
                    with postgres_server(folder / "server") as url:
                        results["postgresql"] = scheduler_only(
                            lambda name: fresh_database(url, name),
                            queued,
                            slots,
                            server.url,
                            "PostgreSQL",
                        )
                finally:
                    subprocess.run(["rm", "-rf", str(folder)], check=False)
            redis.Redis.from_url(server.url).flushdb()
            if e2e:
                results["e2e"] = end_to_end(root, server, runs_, slots)
            redis.Redis.from_url(server.url).flushdb()
            if failover_:
                results["failover"] = failover(root, server)
    return results


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The results as Figure-shaped rows (bench/figures.py)."""
    out: list[dict[str, Any]] = []
    queued, slots = results["queued"], results["slots"]
    load = "load " + "/".join(f"{value:.1f}" for value in results["load"])
    for key in ("sqlite", "postgresql"):
        found = results.get(key)
        if not found:
            continue
        current: AdmissionFigure = found["current"]
        before: AdmissionFigure | None = found.get("previous")
        out.append(
            {
                "name": f"admission, {queued} queued, {slots} slots, {found['database']}",
                "value": current.per_second,
                "unit": "decisions/s",
                "anchor": "previous (per-run reads and updates)" if before else None,
                "anchor_value": before.per_second if before else None,
                "goal": ">= 500",
                "note": (
                    f"scheduler only, submit->dispatched; one round of {slots}: "
                    f"{current.first_round_ms:.0f} ms with {queued} waiting, "
                    f"{current.last_round_ms:.0f} ms with ~{slots} waiting; "
                    f"{current.sending_seconds / current.seconds:.0%} of the time sending tasks "
                    f"(one batched pipeline per round); {found['index']}; "
                    f"{load}"
                ),
            }
        )
    e2e = results.get("e2e")
    if e2e:
        out.append(
            {
                "name": (
                    f"submit->Completed, {e2e['runs']} trivial runs, "
                    f"{e2e['workers']} workers x {e2e['slots'] // e2e['workers']} slots"
                ),
                "value": e2e["runs_per_second"],
                "unit": "runs/s",
                "note": (
                    f"script `pass` (local executor, this Python), SQLite, one scheduler; "
                    f"per run queued->completed p50 {e2e['p50']:.2f} s p95 {e2e['p95']:.2f} s; "
                    f"submitted over REST in {e2e['submit_seconds']:.1f} s; "
                    f"{e2e['failed']} not Completed"
                ),
            }
        )
    handovers = results.get("failover")
    if handovers:
        out.append(
            {
                "name": "scheduler failover (SIGKILL of the leader -> other leads)",
                "value": max(handovers),
                "unit": "s",
                "goal": "<= 5",
                "note": (
                    "worst of "
                    + ", ".join(f"{h:.2f}" for h in handovers)
                    + " s; lease 3 s, renewed every 1 s"
                ),
            }
        )
    return out


def figures(quick: bool = False) -> list[Any]:
    """Run the benchmark (smaller sizes when quick) and return its rows."""
    if quick:
        results = run_all(2_000, 100, 200, postgres=False, e2e=True, failover_=True)
    else:
        results = run_all(10_000, 100, 1_000, postgres=True, e2e=True, failover_=True)
    return _as_figures(rows(results))


def _as_figures(found: list[dict[str, Any]]) -> list[Any]:
    with contextlib.suppress(ImportError):
        from bench.figures import Figure  # type: ignore[attr-defined]

        return [Figure(**row) for row in found]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=100)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-failover", action="store_true")
    args = parser.parse_args()
    results = run_all(
        args.queued,
        args.slots,
        args.runs,
        args.postgres,
        not args.skip_e2e,
        not args.skip_failover,
    )
    for row in rows(results):
        anchor = ""
        if row.get("anchor_value") is not None:
            anchor = f"  (anchor {row['anchor']}: {row['anchor_value']:.1f})"
        print(f"{row['name']}: {row['value']:.2f} {row['unit']}{anchor}")
        print(f"    {row['note']}")


if __name__ == "__main__":
    main()
