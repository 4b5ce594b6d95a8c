"""Node-loss detection (issue 16): how long after a worker's node dies its runs are
NotResponding, and Failed or requeued, with the shipped liveness settings.

    python -m bench.node_loss [--repeats 3] [--quick] [--no-previous]

Starts a private Redis, the API and the scheduler (SQLite) as real processes, and per
repeat a real worker whose run sleeps; then kills the node one of two ways:

- SIGKILL: the worker and every process below it, stopped then killed together;
- network cut: the worker runs on another network host (a namespace joined by a veth pair,
  ``tests.support.hosts``) whose link is taken down: the worker lives on, unheard.

Each time is read from what the scheduler recorded on the run (``not_responding_at``,
``failed_at``, the requeue's ``queued_at``) minus the moment of the kill, all by this
machine's clock: no polling granularity (the next attempt's Running is seen by polling
every 20 ms). p50 over the
repeats (and max, printed). Also, once, the same SIGKILL under the previous defaults
(heartbeat 2 s, NotResponding after 10 s, Failed 20 s later) as the anchor. Not a test: it
asserts nothing about speed. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from protocol.settings import Settings
from runyard.client import Client
from runyard.core import Environment, Experiment, ScriptRunConfig, Workspace
from tests.support.hosts import Link, network_host
from tests.support.services import RedisServer, Stack, free_port, stop_process, unique, wait_until

try:
    from bench.figures import Figure
except ImportError:  # bench/figures.py without the row shape yet: the same fields

    @dataclass(frozen=True)
    class Figure:  # type: ignore[no-redef]
        name: str
        value: float
        unit: str
        anchor: str | None = None
        anchor_value: float | None = None
        goal: str | None = None
        note: str = ""


LIVENESS = ("heartbeat_interval", "not_responding_after", "failed_after", "sweep_interval")
PREVIOUS = {"heartbeat_interval": 2.0, "not_responding_after": 10.0, "failed_after": 20.0}
GOAL = "<= 10"  # the issue's: node-loss detection within 10 s
GUARD = 180.0  # seconds: a failure guard only

SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(3600)\n"


def liveness_env(**overrides: float) -> dict[str, str]:
    values = {name: getattr(Settings(), name) for name in LIVENESS} | overrides
    return {f"RUNYARD_{name.upper()}": str(value) for name, value in values.items()}


def stamp(record: dict, field: str) -> float:
    return datetime.fromisoformat(record[field]).timestamp()


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(process) -> float:  # type: ignore[no-untyped-def]
    """SIGKILL the worker and everything below it at once; returns the moment (epoch s)."""
    tree = [process.pid, *descendants(process.pid)]
    for pid in tree:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    killed = time.time()
    for pid in tree:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
    return killed


class Bench:
    def __init__(self, stack: Stack, folder: Path) -> None:
        self.stack = stack
        self.client: Client = stack.client()
        env = Environment("bench")
        env.python.user_managed_dependencies = True
        env.python.interpreter_path = sys.executable
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sleep.py").write_text(SLEEPER)
        self.folder, self.env = folder, env

    def submit(self, cluster: str) -> str:
        config = ScriptRunConfig(
            source_directory=self.folder,
            script="sleep.py",
            compute_target=cluster,
            environment=self.env,
        )
        return Experiment(Workspace(url=self.stack.url), "node-loss").submit(config).id

    def wait(self, run_id: str, test: Callable[[dict], bool], what: str) -> dict:
        def reached() -> dict | None:
            record = self.client.get_run(run_id)
            return record if test(record) else None

        return wait_until(reached, GUARD, 0.02, what=what)  # type: ignore[return-value]

    def running(self, run_id: str, attempt: int = 1) -> dict:
        return self.wait(
            run_id,
            lambda r: r["status"] == "Running" and r["attempt"] == attempt,
            f"{run_id} running",
        )

    def sigkill(self, requeue: bool) -> dict[str, float]:
        """One run killed with its node; seconds from the kill to each recorded state."""
        cluster = unique("kill")
        self.client.create_cluster(
            cluster, nodes=2, requeue_on_node_loss=requeue, max_attempts=2 if requeue else 1
        )
        victim = self.stack.start_worker(cluster, name=unique("victim"))
        run_id = self.submit(cluster)
        self.running(run_id)
        survivor = self.stack.start_worker(cluster, name=unique("survivor")) if requeue else None
        time.sleep(0.5)  # let the kill fall anywhere in a heartbeat interval (phase varies)
        killed = kill_tree(victim)
        try:
            if requeue:
                # running_at keeps the first attempt's time: the second is seen by polling.
                record = self.running(run_id, attempt=2)
                seen = time.time()
                return {
                    "not_responding": stamp(record, "not_responding_at") - killed,
                    "requeued": stamp(record, "queued_at") - killed,
                    "running_again": seen - killed,
                }
            record = self.wait(run_id, lambda r: r["status"] == "Failed", f"{run_id} failed")
            assert "node lost" in (record["failure_reason"] or ""), record
            return {
                "not_responding": stamp(record, "not_responding_at") - killed,
                "failed": stamp(record, "failed_at") - killed,
            }
        finally:
            with suppress(Exception):
                self.client.cancel(run_id)
            if survivor is not None:
                stop_process(survivor)

    def network_cut(self, link: Link, redis: RedisServer) -> dict[str, float]:
        cluster = unique("cut")
        self.client.create_cluster(cluster, nodes=1)
        worker = self.stack.start_worker(
            cluster,
            name=unique("host-b"),
            prefix=["ip", "netns", "exec", link.namespace],
            env={
                "RUNYARD_REDIS_URL": redis.url_at(link.address_a),
                "RUNYARD_API_URL": f"http://{link.address_a}:{self.stack.port}",
            },
        )
        try:
            run_id = self.submit(cluster)
            self.running(run_id)
            time.sleep(0.5)
            cut = time.time()
            link.cut()
            record = self.wait(run_id, lambda r: r["status"] == "Failed", f"{run_id} failed")
            return {
                "not_responding": stamp(record, "not_responding_at") - cut,
                "failed": stamp(record, "failed_at") - cut,
            }
        finally:
            stop_process(worker, timeout=5)


@contextmanager
def services(
    root: Path, links: list[Link], env: dict[str, str]
) -> Iterator[tuple[Stack, RedisServer]]:
    bind = " ".join(["127.0.0.1", *(link.address_a for link in links)])
    redis = RedisServer(free_port(), root / "redis", bind=bind)
    redis.start()
    stack = Stack(root=root / "stack", redis=redis, host="0.0.0.0" if links else "127.0.0.1")
    stack.extra_env.update(env)
    try:
        stack.start()
        yield stack, redis
    finally:
        stack.stop()
        redis.stop()


def p50(samples: list[dict[str, float]], key: str) -> float:
    values = [s[key] for s in samples if key in s]
    return statistics.median(values) if values else float("nan")


def measure(repeats: int, previous: bool) -> list[Figure]:
    defaults = Settings()
    shipped = ", ".join(f"{n} {getattr(defaults, n):g} s" for n in LIVENESS)
    load = "load avg {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-node-loss-") as tmp, ExitStack() as links:
        root = Path(tmp)
        hosts = [links.enter_context(network_host()) for _ in range(repeats)]
        kills: list[dict[str, float]] = []
        requeues: list[dict[str, float]] = []
        cuts: list[dict[str, float]] = []
        with services(root / "now", hosts, liveness_env()) as (stack, redis):
            bench = Bench(stack, root / "src")
            for _ in range(repeats):
                kills.append(bench.sigkill(requeue=False))
                requeues.append(bench.sigkill(requeue=True))
            for link in hosts:
                cuts.append(bench.network_cut(link, redis))
        before: list[dict[str, float]] = []
        if previous:
            with services(root / "before", [], liveness_env(**PREVIOUS)) as (stack, _):
                before.append(Bench(stack, root / "src").sigkill(requeue=False))
    load_after = "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    note = f"p50 of {repeats}; {shipped}; {load} before, {load_after} after; 2-core machine"
    for label, samples in (("SIGKILL", kills), ("SIGKILL+requeue", requeues), ("cut", cuts)):
        for key in samples[0]:
            values = ", ".join(f"{s[key]:.2f}" for s in samples)
            print(f"{label:16} → {key:15} {values}  (p50 {p50(samples, key):.2f} s)")
    anchor = "previous defaults (2/10/20 s)" if before else None

    def prev(key: str) -> float | None:
        return p50(before, key) if before else None

    return [
        Figure("node loss: SIGKILL → NotResponding", p50(kills, "not_responding"), "s",
               anchor, prev("not_responding"), GOAL, note),
        Figure("node loss: SIGKILL → Failed (node lost)", p50(kills, "failed"), "s",
               anchor, prev("failed"), None, note),
        Figure("node loss: SIGKILL → requeued", p50(requeues, "requeued"), "s",
               None, None, None, note),
        Figure("node loss: SIGKILL → Running again on another worker",
               p50(requeues, "running_again"), "s", None, None, None, note),
        Figure("node loss: network cut → NotResponding", p50(cuts, "not_responding"), "s",
               None, None, GOAL, note),
        Figure("node loss: network cut → Failed (node lost)", p50(cuts, "failed"), "s",
               None, None, None, note),
    ]  # fmt: skip


def figures(quick: bool = False) -> list[Figure]:
    """The rows for ``python -m bench``: one repeat when quick, three otherwise."""
    return measure(repeats=1 if quick else 3, previous=not quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat, no anchor")
    parser.add_argument("--no-previous", action="store_true", help="skip the anchor")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    rows = measure(repeats, previous=not (args.quick or args.no_previous))
    print()
    for row in rows:
        anchor = f"  [{row.anchor}: {row.anchor_value:.2f}]" if row.anchor_value else ""
        goal = f"  goal {row.goal}" if row.goal else ""
        print(f"{row.name:55} {row.value:6.2f} {row.unit}{goal}{anchor}")
    print(rows[0].note)


if __name__ == "__main__":
    main()
